//! The apm-server version apm-rs implements. A leaf module: it imports
//! nothing of ours, so every layer (the Elasticsearch client's User-Agent,
//! the outputs, the server's `GET /` answer) can read it without depending
//! on the server.

/// The apm-server version apm-rs implements and reports to agents (they use
/// it for feature detection) and in `observer.version`.
pub const COMPAT_VERSION: &str = "9.5.2";
