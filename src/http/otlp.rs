//! OTLP over HTTP (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`): reads the
//! body (gzip allowed), protobuf (`application/x-protobuf`) or OTLP/JSON
//! (`application/json`), hands it to the pipeline as one batch and answers
//! in OTLP's shape, encoded like the request.
//!
//! OTLP/JSON is the protobuf JSON mapping with OTLP's exceptions (hex trace
//! and span ids, lowerCamelCase names, enums as integers, 64-bit integers
//! as strings or numbers), which `opentelemetry-proto`'s `with-serde`
//! feature implements; a JSON message is turned into the protobuf message
//! on a blocking thread and enters the pipeline like a protobuf one.
//!
//! Invariants: the route is in the backend group (authentication and the
//! anonymous per-IP limit run before the body is read); a body is read up
//! to [`MAX_MESSAGE_BYTES`] before and after decompression, never more; the
//! message enters the same bounded pipeline as intake v2 (one batch, its
//! memory-budget permit sized by the decoded bytes); success is `200` with
//! an `Export*ServiceResponse` whose `partial_success` counts the refused
//! items; failures are the HTTP status plus a `google.rpc.Status` message.

use super::error::IntakeError;
use super::otlp_export::{self, ExportError, Exported};
use super::{backend_group, response, AppState};
use crate::model::otlp::Signal;
use crate::pipeline::RequestCtx;
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use prost::Message;
use std::io::Read;
use std::sync::Arc;

pub use super::otlp_export::MAX_MESSAGE_BYTES;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// How a request's body and its answer are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding named by a `Content-Type` value (parameters ignored).
    fn of(content_type: &str) -> Option<Encoding> {
        let essence = content_type.split(';').next().map(str::trim)?;
        if essence.eq_ignore_ascii_case(PROTOBUF) {
            Some(Encoding::Protobuf)
        } else if essence.eq_ignore_ascii_case(JSON) {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// `google.rpc.Status`, the body of every OTLP/HTTP failure.
#[derive(Clone, PartialEq, Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Why an OTLP/HTTP request failed before or in the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum OtlpHttpError {
    #[error("only POST requests are supported")]
    Method,
    #[error("unsupported content type {0:?}: send {PROTOBUF} or {JSON}")]
    ContentType(String),
    #[error("unsupported content encoding {0:?}")]
    Encoding(String),
    #[error("request body exceeds {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("cannot read request body: {0}")]
    Read(String),
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl OtlpHttpError {
    /// (HTTP status, gRPC code) of the error, as OTLP/HTTP pairs them.
    fn codes(&self) -> (StatusCode, i32) {
        use rpc_code::*;
        match self {
            OtlpHttpError::Method => (StatusCode::METHOD_NOT_ALLOWED, INVALID_ARGUMENT),
            OtlpHttpError::ContentType(_) | OtlpHttpError::Encoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_ARGUMENT)
            }
            OtlpHttpError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED),
            OtlpHttpError::Read(_) | OtlpHttpError::Export(ExportError::Invalid(_)) => {
                (StatusCode::BAD_REQUEST, INVALID_ARGUMENT)
            }
            OtlpHttpError::Export(ExportError::TimedOut) => {
                (StatusCode::SERVICE_UNAVAILABLE, DEADLINE_EXCEEDED)
            }
            OtlpHttpError::Export(ExportError::Pipeline(e)) => match e {
                IntakeError::Unauthorized(_) => (StatusCode::FORBIDDEN, PERMISSION_DENIED),
                IntakeError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED),
                IntakeError::QueueFull | IntakeError::ShuttingDown => {
                    (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
                }
                other => (other.status(), INTERNAL),
            },
        }
    }

    fn respond(&self, encoding: Encoding) -> HttpResponse {
        let (status, code) = self.codes();
        let status_msg = RpcStatus {
            code,
            message: self.to_string(),
        };
        let body = match encoding {
            Encoding::Protobuf => status_msg.encode_to_vec(),
            Encoding::Json => serde_json::json!({
                "code": status_msg.code,
                "message": status_msg.message,
            })
            .to_string()
            .into_bytes(),
        };
        response::builder(status)
            .insert_header((CONTENT_TYPE, encoding.content_type()))
            .body(body)
    }
}

/// The gRPC status codes OTLP errors carry (google.rpc.Code numbers).
mod rpc_code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

pub async fn traces(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Signal::Traces, req, payload, state).await
}

pub async fn metrics(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Signal::Metrics, req, payload, state).await
}

pub async fn logs(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Signal::Logs, req, payload, state).await
}

async fn handle(
    signal: Signal,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let state = state.into_inner();
    let (st, rq) = (&state, &req);
    backend_group(&req, &state, |auth, addr| async move {
        let ctx = otlp_export::request_ctx(st, auth, &addr, super::user_agent(rq));
        let encoding = rq
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Encoding::of);
        match export(signal, encoding, st, rq, payload, ctx).await {
            Ok(r) => success(signal, encoding.unwrap_or(Encoding::Protobuf), r),
            Err(e) => e.respond(encoding.unwrap_or(Encoding::Protobuf)),
        }
    })
    .await
}

async fn export(
    signal: Signal,
    encoding: Option<Encoding>,
    state: &Arc<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
    ctx: RequestCtx,
) -> Result<Exported, OtlpHttpError> {
    if req.method() != Method::POST {
        return Err(OtlpHttpError::Method);
    }
    let Some(encoding) = encoding else {
        let ct = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return Err(OtlpHttpError::ContentType(ct));
    };
    let deadline = tokio::time::Instant::now() + state.cfg.apm_server.read_timeout.get();
    let _slot = otlp_export::decoder_slot(state, deadline).await?;
    let wire = read_body(payload, deadline).await?;
    state.http_metrics.body_bytes.inc_by(wire.len() as u64);
    let body = match req.headers().get(CONTENT_ENCODING).map(|v| v.as_bytes()) {
        None | Some(b"identity") => wire,
        Some(b"gzip") => gunzip(&wire)?,
        Some(other) => {
            return Err(OtlpHttpError::Encoding(
                String::from_utf8_lossy(other).into_owned(),
            ))
        }
    };
    let body = match encoding {
        Encoding::Protobuf => body,
        Encoding::Json => web::block(move || json_to_protobuf(signal, &body))
            .await
            .map_err(|e| OtlpHttpError::Read(e.to_string()))??,
    };
    Ok(otlp_export::submit(state, ctx, signal, body).await?)
}

/// An OTLP/JSON message as the protobuf message of the same signal.
fn json_to_protobuf(signal: Signal, json: &[u8]) -> Result<Bytes, OtlpHttpError> {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    fn parse<M: serde::de::DeserializeOwned + Message>(
        signal: Signal,
        json: &[u8],
    ) -> Result<Bytes, OtlpHttpError> {
        serde_json::from_slice::<M>(json)
            .map(|m| Bytes::from(m.encode_to_vec()))
            .map_err(|e| {
                ExportError::Invalid(format!(
                    "failed to decode OTLP {} request: {e}",
                    signal.as_str()
                ))
                .into()
            })
    }
    match signal {
        Signal::Traces => parse::<ExportTraceServiceRequest>(signal, json),
        Signal::Metrics => parse::<ExportMetricsServiceRequest>(signal, json),
        Signal::Logs => parse::<ExportLogsServiceRequest>(signal, json),
    }
}

async fn read_body(
    mut payload: web::Payload,
    deadline: tokio::time::Instant,
) -> Result<Bytes, OtlpHttpError> {
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(ExportError::TimedOut.into()),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(OtlpHttpError::Read(e.to_string())),
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > MAX_MESSAGE_BYTES {
                    return Err(OtlpHttpError::TooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}

/// Decompresses a gzip body, refusing more than [`MAX_MESSAGE_BYTES`] out.
fn gunzip(wire: &[u8]) -> Result<Bytes, OtlpHttpError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(wire)
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| OtlpHttpError::Read(format!("gzip: {e}")))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(OtlpHttpError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// `200` with the signal's export response, encoded as the request was;
/// `partial_success` when items were refused (left out of a JSON answer
/// when none were: serde would write `null`).
fn success(signal: Signal, encoding: Encoding, r: Exported) -> HttpResponse {
    let body = match encoding {
        Encoding::Protobuf => r.encode(signal),
        Encoding::Json if r.rejected == 0 => b"{}".to_vec(),
        Encoding::Json => match signal {
            Signal::Traces => serde_json::to_vec(&r.traces()),
            Signal::Metrics => serde_json::to_vec(&r.metrics()),
            Signal::Logs => serde_json::to_vec(&r.logs()),
        }
        .unwrap_or_else(|_| b"{}".to_vec()),
    };
    response::builder(StatusCode::OK)
        .insert_header((CONTENT_TYPE, encoding.content_type()))
        .body(body)
}
