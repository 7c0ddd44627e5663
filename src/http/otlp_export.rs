//! The transport-independent part of an OTLP export, shared by OTLP/HTTP
//! ([`super::otlp`]) and OTLP/gRPC (`crate::grpc`): the request context, a
//! decoder slot, submitting the raw message into the pipeline and counting
//! what was refused for `partial_success`.
//!
//! Invariants: one message is one pipeline batch whose memory-budget permit
//! is sized by the decoded (decompressed) message bytes; the message is
//! decoded only by the pipeline's decoder stage, never here; a message of
//! which every item was refused is an error for the whole request, one with
//! some items refused is a success carrying the refused count and the first
//! reason.

use super::client_ip::ClientAddr;
use super::error::IntakeError;
use super::intake::IntakeRun;
use super::AppState;
use crate::auth::AuthResult;
use crate::model::otlp::Signal;
use crate::pipeline::{RawLine, RequestCtx};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsPartialSuccess, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsPartialSuccess, ExportMetricsServiceResponse},
    trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse},
};
use prost::Message;
use std::sync::{Arc, OnceLock};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// Largest OTLP message accepted, on the wire and decompressed; one message
/// is one pipeline batch, so this also bounds a batch's memory-budget permit.
pub const MAX_MESSAGE_BYTES: usize = 20 * 1024 * 1024;

/// Why an export failed in the transport-independent part.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No decoder slot (`apm-server.max_concurrent_decoders`) before the deadline.
    #[error("request timed out")]
    TimedOut,
    /// Every item of the message was refused (the first reason).
    #[error("{0}")]
    Invalid(String),
    /// The pipeline refused the message.
    #[error("{0}")]
    Pipeline(IntakeError),
}

/// A message taken by the pipeline; `rejected` items (with the first
/// `message`) were refused, the others accepted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    pub rejected: i64,
    pub message: String,
}

/// The pipeline context of an OTLP request: its event fields, its
/// authentication and, for anonymous clients, the rate-limit key.
pub fn request_ctx(
    state: &AppState,
    auth: AuthResult,
    addr: &ClientAddr,
    user_agent: Option<String>,
) -> RequestCtx {
    let rate_key = auth
        .is_anonymous()
        .then(|| crate::ratelimit::key_of(addr.client_ip));
    RequestCtx {
        base: super::base_of(state, addr, user_agent, false),
        auth,
        rate_key,
        metadata: OnceLock::new(),
    }
}

/// One of the `apm-server.max_concurrent_decoders` slots, held while the
/// message is read and processed.
pub async fn decoder_slot(
    state: &AppState,
    deadline: Instant,
) -> Result<OwnedSemaphorePermit, ExportError> {
    match tokio::time::timeout_at(deadline, Arc::clone(&state.decoders).acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => Err(ExportError::TimedOut),
    }
}

/// Submits one decoded-from-the-wire (decompressed) message as one batch
/// and waits for the pipeline's answer.
pub async fn submit(
    state: &Arc<AppState>,
    ctx: RequestCtx,
    signal: Signal,
    body: Bytes,
) -> Result<Exported, ExportError> {
    state.http_metrics.decoded_bytes.inc_by(body.len() as u64);
    let n = body.len();
    let result = IntakeRun::new(Arc::clone(state), ctx)
        .submit(vec![RawLine::Otlp(signal, body)], n)
        .await;
    if let Some(t) = result.terminal {
        return Err(ExportError::Pipeline(t));
    }
    let first = result.errors.first().map(|e| e.error.to_string());
    if result.accepted == 0 {
        if let Some(first) = first {
            return Err(ExportError::Invalid(first));
        }
    }
    Ok(Exported {
        rejected: (result.errors.len() + result.more_errors) as i64,
        message: first.unwrap_or_default(),
    })
}

impl Exported {
    pub fn traces(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejected,
                error_message: self.message.clone(),
            }),
        }
    }

    pub fn metrics(&self) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: self.rejected,
                error_message: self.message.clone(),
            }),
        }
    }

    pub fn logs(&self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: self.rejected,
                error_message: self.message.clone(),
            }),
        }
    }

    /// The signal's export response, protobuf-encoded.
    pub fn encode(&self, signal: Signal) -> Vec<u8> {
        match signal {
            Signal::Traces => self.traces().encode_to_vec(),
            Signal::Metrics => self.metrics().encode_to_vec(),
            Signal::Logs => self.logs().encode_to_vec(),
        }
    }
}
