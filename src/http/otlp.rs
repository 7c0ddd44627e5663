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
use super::intake::{IntakeResult, IntakeRun};
use super::{backend_group, response, AppState};
use crate::model::otlp::Signal;
use crate::pipeline::{RawLine, RequestCtx};
use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use prost::Message;
use std::io::Read;
use std::sync::{Arc, OnceLock};

/// Largest OTLP message accepted, on the wire and decompressed; one message
/// is one pipeline batch, so this also bounds a batch's memory-budget permit.
pub const MAX_MESSAGE_BYTES: usize = 20 * 1024 * 1024;

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
    #[error("request timed out")]
    TimedOut,
    /// Every item of the message was refused (the first reason).
    #[error("{0}")]
    Invalid(String),
    /// The pipeline refused the message.
    #[error("{0}")]
    Pipeline(IntakeError),
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
            OtlpHttpError::Read(_) | OtlpHttpError::Invalid(_) => {
                (StatusCode::BAD_REQUEST, INVALID_ARGUMENT)
            }
            OtlpHttpError::TimedOut => (StatusCode::SERVICE_UNAVAILABLE, DEADLINE_EXCEEDED),
            OtlpHttpError::Pipeline(e) => match e {
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
        let rate_key = auth
            .is_anonymous()
            .then(|| crate::ratelimit::key_of(addr.client_ip));
        let ctx = RequestCtx {
            base: super::request_base(st, rq, &addr, false),
            auth,
            rate_key,
            metadata: OnceLock::new(),
        };
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
) -> Result<IntakeResult, OtlpHttpError> {
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
    let Ok(Ok(_slot)) =
        tokio::time::timeout_at(deadline, Arc::clone(&state.decoders).acquire_owned()).await
    else {
        return Err(OtlpHttpError::TimedOut);
    };
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
    state.http_metrics.decoded_bytes.inc_by(body.len() as u64);
    let body = match encoding {
        Encoding::Protobuf => body,
        Encoding::Json => web::block(move || json_to_protobuf(signal, &body))
            .await
            .map_err(|e| OtlpHttpError::Read(e.to_string()))??,
    };
    let n = body.len();
    let result = IntakeRun::new(Arc::clone(state), ctx)
        .submit(vec![RawLine::Otlp(signal, body)], n)
        .await;
    if let Some(t) = result.terminal {
        return Err(OtlpHttpError::Pipeline(t));
    }
    if result.accepted == 0 {
        if let Some(first) = result.errors.first() {
            return Err(OtlpHttpError::Invalid(first.error.to_string()));
        }
    }
    Ok(result)
}

async fn read_body(
    mut payload: web::Payload,
    deadline: tokio::time::Instant,
) -> Result<Bytes, OtlpHttpError> {
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(OtlpHttpError::TimedOut),
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
                OtlpHttpError::Invalid(format!(
                    "failed to decode OTLP {} request: {e}",
                    signal.as_str()
                ))
            })
    }
    match signal {
        Signal::Traces => parse::<ExportTraceServiceRequest>(signal, json),
        Signal::Metrics => parse::<ExportMetricsServiceRequest>(signal, json),
        Signal::Logs => parse::<ExportLogsServiceRequest>(signal, json),
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

/// An export response in either encoding.
trait ResponseMessage {
    fn protobuf(&self) -> Vec<u8>;
    fn json(&self) -> Vec<u8>;
}

impl<M: Message + serde::Serialize> ResponseMessage for M {
    fn protobuf(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
    fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// `200` with the signal's export response, encoded as the request was;
/// `partial_success` when items were refused.
fn success(signal: Signal, encoding: Encoding, r: IntakeResult) -> HttpResponse {
    let rejected = (r.errors.len() + r.more_errors) as i64;
    let message = r
        .errors
        .first()
        .map(|e| e.error.to_string())
        .unwrap_or_default();
    // JSON leaves an absent `partialSuccess` out (serde would write `null`).
    let encode = |m: &dyn ResponseMessage, encoding: Encoding| match encoding {
        Encoding::Protobuf => m.protobuf(),
        Encoding::Json if rejected == 0 => b"{}".to_vec(),
        Encoding::Json => m.json(),
    };
    let body = match signal {
        Signal::Traces => encode(
            &ExportTraceServiceResponse {
                partial_success: (rejected > 0).then_some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }),
            },
            encoding,
        ),
        Signal::Metrics => encode(
            &ExportMetricsServiceResponse {
                partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }),
            },
            encoding,
        ),
        Signal::Logs => encode(
            &ExportLogsServiceResponse {
                partial_success: (rejected > 0).then_some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: message,
                }),
            },
            encoding,
        ),
    };
    response::builder(StatusCode::OK)
        .insert_header((CONTENT_TYPE, encoding.content_type()))
        .body(body)
}
