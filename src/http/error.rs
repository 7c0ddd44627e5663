//! Every error an intake request can end with, mapped to its HTTP status and
//! agent-visible message in one place (apm-server's texts; see docs/intake.md).

use super::body::BodyError;
use crate::pipeline::Terminal;
use actix_web::http::StatusCode;

/// An error that ends an intake stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntakeError {
    #[error("only POST requests are supported")]
    Method,
    #[error("invalid content type: '{0}'")]
    ContentType(String),
    #[error("data decoding error: {0}")]
    Decompress(BodyError),
    /// Metadata line missing, unterminated, too large or invalid.
    #[error("{message}")]
    Metadata {
        message: String,
        document: Option<bytes::Bytes>,
    },
    /// Reading the body failed while reading the metadata line.
    #[error("{0}")]
    ReadMetadata(String),
    /// Reading the body failed after the metadata line.
    #[error("cannot handle stream: {0}")]
    Read(String),
    #[error("cannot handle stream: cannot process batch: {0}")]
    Unauthorized(String),
    #[error("cannot handle stream: cannot process batch: rate limit exceeded")]
    RateLimited,
    #[error("cannot handle stream: cannot process batch: queue is full")]
    QueueFull,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("cannot handle stream: cannot process batch: {0}")]
    Internal(String),
}

impl IntakeError {
    pub fn status(&self) -> StatusCode {
        match self {
            IntakeError::Method
            | IntakeError::ContentType(_)
            | IntakeError::Decompress(_)
            | IntakeError::Metadata { .. }
            | IntakeError::ReadMetadata(_) => StatusCode::BAD_REQUEST,
            IntakeError::Unauthorized(_) => StatusCode::FORBIDDEN,
            IntakeError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            IntakeError::QueueFull | IntakeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            IntakeError::Read(_) | IntakeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn document(&self) -> Option<&bytes::Bytes> {
        match self {
            IntakeError::Metadata { document, .. } => document.as_ref(),
            _ => None,
        }
    }
}

impl From<Terminal> for IntakeError {
    fn from(t: Terminal) -> Self {
        match t {
            Terminal::Metadata { message, document } => IntakeError::Metadata {
                message,
                document: Some(document),
            },
            Terminal::Unauthorized(s) => IntakeError::Unauthorized(s),
            Terminal::RateLimited => IntakeError::RateLimited,
            Terminal::Internal(s) => IntakeError::Internal(s),
            Terminal::QueueFull => IntakeError::QueueFull,
        }
    }
}

/// Messages of the middleware-level rejections (generic `{"error": …}` shape).
pub mod msg {
    pub const NOT_FOUND: &str = "404 page not found";
    pub const SERVICE_UNAVAILABLE: &str = "service unavailable";
    pub const TIMED_OUT: &str = "request timed out";
    pub const PANIC: &str = "panic handling request";
    pub const RATE_LIMITED: &str = "too many requests: rate limit exceeded";
    pub const ROOT_METHOD: &str = "method not supported: this is the server information endpoint; did you mean to send data to another endpoint instead?";
    pub const RUM_DISABLED: &str = "forbidden request: RUM endpoint is disabled. Configure the `apm-server.rum` section in apm-server.yml to enable ingestion of RUM events. If you are not using the RUM agent, you can safely ignore this error.";
}
