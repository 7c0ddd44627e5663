//! OTLP/gRPC for the `otlp` mix (`--grpc URL`): the same export messages as
//! OTLP/HTTP, sent as unary `Export` calls to the server's gRPC listener.
//!
//! The bodies are already-encoded protobuf, so a pass-through codec hands
//! them to tonic as bytes and reads the answer as bytes: the generator
//! spends no CPU re-encoding what it built once. gzip is used when the
//! body gzip level is above 0 (tonic compresses the message itself).

use crate::otlp::Signal;
use crate::stats::Outcome;
use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// A connection to the gRPC listener and the call settings.
#[derive(Clone)]
pub struct GrpcSender {
    channel: Channel,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    gzip: bool,
}

impl GrpcSender {
    /// Connects to `url` (`http://host:port`) with one HTTP/2 connection
    /// shared by every stream, as an SDK's exporter does.
    pub async fn connect(
        url: &str,
        authorization: Option<&str>,
        gzip: bool,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| format!("bad --grpc URL: {e}"))?
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to the gRPC listener {url}: {e}"))?;
        let authorization = authorization
            .map(|a| {
                a.parse()
                    .map_err(|_| "credential is not a valid metadata value")
            })
            .transpose()?;
        Ok(GrpcSender {
            channel,
            authorization,
            gzip,
        })
    }

    /// One export call; the outcome in HTTP terms (200 with the accepted
    /// items, or the status OTLP/HTTP would have answered).
    pub async fn export(&self, signal: Signal, body: Bytes, events: u64) -> Outcome {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if self.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        if grpc.ready().await.is_err() {
            return Outcome::Error("grpc:unavailable");
        }
        let mut req = tonic::Request::new(body);
        if let Some(a) = &self.authorization {
            req.metadata_mut().insert("authorization", a.clone());
        }
        let path = http::uri::PathAndQuery::from_static(signal.grpc_method());
        match grpc.unary(req, path, RawCodec).await {
            Ok(resp) => Outcome::Http {
                status: 200,
                accepted: events.saturating_sub(signal.rejected(resp.get_ref())),
            },
            Err(s) => Outcome::Http {
                status: http_status(s.code()),
                accepted: 0,
            },
        }
    }
}

/// The HTTP status OTLP/HTTP uses for the same failure.
fn http_status(code: Code) -> u16 {
    match code {
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unavailable => 503,
        Code::InvalidArgument => 400,
        Code::DeadlineExceeded => 408,
        _ => 500,
    }
}

/// Passes encoded messages through unchanged.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
