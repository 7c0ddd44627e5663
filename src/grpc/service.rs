//! The three OTLP `Export` calls as one tower service: routes by path,
//! admits the call ([`super::auth`]), takes a decoder slot, lets tonic read
//! the gRPC frame (gzip accepted, at most [`MAX_MESSAGE_BYTES`] on the wire
//! and decompressed) and hands the raw message bytes to
//! [`otlp_export::submit`].
//!
//! The message is kept as bytes ([`RawCodec`]) instead of tonic's generated
//! servers decoding it: the pipeline's decoder stage decodes it once, on
//! the pipeline's threads, after the memory budget admitted its size.
//!
//! Invariants: nothing is read before the call is admitted; the message
//! must arrive within `apm-server.read_timeout` of the call's start
//! (`DEADLINE_EXCEEDED` otherwise), so a slow client cannot hold a decoder
//! slot; an unknown path is `UNIMPLEMENTED`.

use super::{auth, status};
use crate::http::otlp_export::{self, MAX_MESSAGE_BYTES};
use crate::http::AppState;
use crate::model::otlp::Signal;
use bytes::{Buf, BufMut, Bytes};
use http_body::Frame;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

pub const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
pub const LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The TCP peer of a connection, put into each request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The OTLP collector services.
#[derive(Clone)]
pub struct OtlpService {
    pub state: Arc<AppState>,
}

impl NamedService for OtlpService {
    const NAME: &'static str = "opentelemetry.proto.collector";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl tonic::codegen::Service<http::Request<Body>> for OtlpService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move { Ok(handle(state, req).await) })
    }
}

/// Answers one call and counts it by method and status code.
async fn handle(state: Arc<AppState>, req: http::Request<Body>) -> http::Response<Body> {
    let method = match req.uri().path() {
        TRACES => TRACES,
        METRICS => METRICS,
        LOGS => LOGS,
        _ => "other",
    };
    let resp = answer(Arc::clone(&state), req).await;
    // a success's status is in the trailers; only failures carry it in the headers
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    state
        .telemetry
        .grpc_requests
        .with_label_values(&[method, code])
        .inc();
    resp
}

async fn answer(state: Arc<AppState>, req: http::Request<Body>) -> http::Response<Body> {
    let signal = match req.uri().path() {
        TRACES => Signal::Traces,
        METRICS => Signal::Metrics,
        LOGS => Signal::Logs,
        other => return Status::unimplemented(format!("unknown method {other}")).into_http(),
    };
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let admitted = match auth::admit(&state, peer, req.headers()).await {
        Ok(a) => a,
        Err(s) => return s.into_http(),
    };
    let deadline = tokio::time::Instant::now() + state.cfg.apm_server.read_timeout.get();
    let slot = match otlp_export::decoder_slot(&state, deadline).await {
        Ok(s) => s,
        Err(e) => return status::of_export(&e).into_http(),
    };
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ctx = otlp_export::request_ctx(&state, admitted.auth, &admitted.addr, user_agent);
    let export = Export {
        state,
        signal,
        ctx: Some(ctx),
    };
    let req = req.map(|b| Body::new(Deadline::new(b, deadline)));
    let mut grpc = Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut resp = grpc.unary(export, req).await;
    drop(slot);
    rewrite_size_limit_code(&mut resp);
    resp
}

/// See [`status::size_limit_code`]: tonic's answer to an oversize message
/// is a trailers-only response whose `grpc-status` is in the headers.
fn rewrite_size_limit_code(resp: &mut http::Response<Body>) {
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32);
    if let Some(code) = code {
        let mapped = status::size_limit_code(code);
        if mapped != code {
            resp.headers_mut()
                .insert("grpc-status", http::HeaderValue::from(mapped as i32));
        }
    }
}

/// One admitted `Export` call.
struct Export {
    state: Arc<AppState>,
    signal: Signal,
    ctx: Option<crate::pipeline::RequestCtx>,
}

impl UnaryService<Bytes> for Export {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (state, signal, ctx) = (Arc::clone(&self.state), self.signal, self.ctx.take());
        Box::pin(async move {
            let ctx = ctx.ok_or_else(|| Status::internal("call made twice"))?;
            let body = request.into_inner();
            match otlp_export::submit(&state, ctx, signal, body).await {
                Ok(r) => Ok(Response::new(Bytes::from(r.encode(signal)))),
                Err(e) => Err(status::of_export(&e)),
            }
        })
    }
}

/// A codec that keeps messages as their protobuf bytes (requests) and
/// writes already-encoded responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

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
        dst.put_slice(&item);
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

/// A request body that fails with `DEADLINE_EXCEEDED` once `deadline` passes.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Body, deadline: tokio::time::Instant) -> Self {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Status::deadline_exceeded("request timed out"))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
