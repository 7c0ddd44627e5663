//! The mapping of every OTLP/gRPC failure to its gRPC status, in one place.
//!
//! Codes follow apm-server's: bad credentials `UNAUTHENTICATED`, an event
//! refused by the anonymous allow lists or an API key without `event:write`
//! `PERMISSION_DENIED`, the anonymous rate limit `RESOURCE_EXHAUSTED` (`rate
//! limit exceeded`), an undecodable message `INVALID_ARGUMENT`. A full
//! pipeline (after `pipeline.queue_wait`) and shutdown are `UNAVAILABLE`,
//! which OTLP exporters retry with back-off (they retry
//! `RESOURCE_EXHAUSTED` only with retry information).

use crate::auth::AuthError;
use crate::http::error::IntakeError;
use crate::http::otlp_export::ExportError;
use tonic::{Code, Status};

/// The text of a refused anonymous request over its per-IP limit.
pub const RATE_LIMITED: &str = "rate limit exceeded";

/// An authentication failure; a backend failure's text is only logged.
pub fn of_auth(e: &AuthError) -> Status {
    match e {
        AuthError::Failed(text) => Status::unauthenticated(text.as_str()),
        AuthError::Backend(text) => {
            tracing::warn!(error = %text, "authentication backend error");
            Status::unavailable("service unavailable")
        }
    }
}

/// A failed export.
pub fn of_export(e: &ExportError) -> Status {
    match e {
        ExportError::TimedOut => Status::deadline_exceeded("request timed out"),
        ExportError::Invalid(text) => Status::invalid_argument(text.as_str()),
        ExportError::Pipeline(p) => match p {
            IntakeError::Unauthorized(text) => Status::permission_denied(text.as_str()),
            IntakeError::RateLimited => Status::resource_exhausted(RATE_LIMITED),
            IntakeError::QueueFull => Status::unavailable("queue is full"),
            IntakeError::ShuttingDown => Status::unavailable("server is shutting down"),
            other => Status::internal(other.to_string()),
        },
    }
}

/// tonic answers a message over the size limit with `OUT_OF_RANGE`; gRPC
/// servers (apm-server's grpc-go among them) answer `RESOURCE_EXHAUSTED`.
/// No call of ours produces `OUT_OF_RANGE`, so the code is rewritten.
pub fn size_limit_code(code: Code) -> Code {
    match code {
        Code::OutOfRange => Code::ResourceExhausted,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pipeline_is_unavailable_so_exporters_retry() {
        let s = of_export(&ExportError::Pipeline(IntakeError::QueueFull));
        assert_eq!(s.code(), Code::Unavailable);
    }

    #[test]
    fn an_allow_list_refusal_is_permission_denied_with_apm_servers_text() {
        let text = "unauthorized: anonymous access not permitted for agent \"otlp\"";
        let s = of_export(&ExportError::Pipeline(IntakeError::Unauthorized(
            text.into(),
        )));
        assert_eq!((s.code(), s.message()), (Code::PermissionDenied, text));
    }

    #[test]
    fn the_event_rate_limit_is_resource_exhausted() {
        let s = of_export(&ExportError::Pipeline(IntakeError::RateLimited));
        assert_eq!(
            (s.code(), s.message()),
            (Code::ResourceExhausted, RATE_LIMITED)
        );
    }

    #[test]
    fn bad_credentials_are_unauthenticated() {
        let s = of_auth(&AuthError::Failed("authentication failed".into()));
        assert_eq!(s.code(), Code::Unauthenticated);
    }

    #[test]
    fn an_oversize_message_is_resource_exhausted() {
        assert_eq!(size_limit_code(Code::OutOfRange), Code::ResourceExhausted);
        assert_eq!(size_limit_code(Code::Internal), Code::Internal);
    }
}
