//! The intake model: decoding agent ndjson (v2, RUM v3) into typed events and
//! encoding events into the Elasticsearch documents apm-server writes.
//!
//! Public API used by the pipeline (keep these signatures stable):
//! * [`Decoder`]: one per decoder actor; owns scratch buffers.
//!   [`Decoder::decode_metadata`] decodes the first line of a stream,
//!   [`Decoder::decode_event`] decodes one later line into one or more events.
//! * [`Event`]: a decoded event carrying everything the document needs.
//!   Source-map stage hooks: [`Event::stacktraces_mut`] (→ [`Frame`] setters),
//!   [`Event::service_name`]/[`Event::service_version`],
//!   [`Event::apply_rum_frame_rules`] (library/exclude marking),
//!   [`Event::update_culprit`], [`Event::update_grouping_key`].
//! * [`encode`]: writes the bulk action line and the document for one event.
//!
//! Layout: `event` (types), `decode` (Decoder, root-key scan, one file of
//! field rules per event type with v2 and v3 key tables), `encode` (JSON writer + documents), `routing` (data streams), `grouping`
//! (error grouping keys), `timestamp` (RFC 3339), `shared` (the
//! reference-counted strings stack frames share). `tests` holds the corpus-driven tests.
//!
//! Invariants: decoding never panics on any input; an invalid line yields a
//! [`LineError`] whose text is apm-server's (docs/intake.md, Errors and their order); encoding writes
//! straight into the caller's buffer.

mod decode;
mod encode;
pub(crate) mod event;
mod grouping;
pub mod otlp;
mod routing;
mod shared;
#[cfg(test)]
mod tests;
mod timestamp;

pub use decode::Decoder;
pub use encode::{encode, EncodeContext};
pub use event::{Event, Frame, Metadata, RumFrameRules};

use std::net::IpAddr;

/// Per-request facts every event starts from Built by the
/// HTTP layer; when `capture_personal_data` is off only `received_ns` and
/// `rum` are set.
#[derive(Clone, Debug, Default)]
pub struct RequestBase {
    /// Time the request was received, nanoseconds since the Unix epoch.
    pub received_ns: i64,
    /// Request came in on a RUM endpoint.
    pub rum: bool,
    /// Client IP (forwarding headers or peer).
    pub client_ip: Option<IpAddr>,
    /// Source port when a forwarding header carried one, else the peer's.
    pub source_port: Option<u16>,
    /// The TCP peer IP when a forwarding header supplied the client IP.
    pub nat_ip: Option<IpAddr>,
    /// `User-Agent` header values joined with `", "`.
    pub user_agent: Option<String>,
}

/// Settings the decoder applies while building events.
#[derive(Clone, Debug, Default)]
pub struct DecodeConfig {
    /// `apm-server.default_service_environment`: fills an empty `service.environment`.
    pub default_service_environment: String,
}

/// Why one line was rejected. `Display` is the message shown to the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// JSON syntax or type error.
    #[error("decode error: data read error: {0}")]
    Decode(String),
    /// Schema rule violated (docs/intake.md, Field rules and limits).
    #[error("validation error: {0}")]
    Validation(String),
    /// Root key is not a known event type.
    #[error("did not recognize object type: \"{0}\"")]
    UnknownType(String),
    /// First line is not metadata.
    #[error("\"metadata\" or \"m\" required")]
    MetadataRequired,
    /// The line is longer than `max_event_size`; it is not decoded.
    #[error("event exceeded the permitted size")]
    TooLarge,
    /// An OTLP message that does not decode, or one of its items refused.
    #[error("{0}")]
    Otlp(String),
}
