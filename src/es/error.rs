//! The one error type of the Elasticsearch client: why a settings section
//! cannot become a client. Request failures are the callers' (each maps a
//! transport error or status to its own protocol). Messages name the
//! settings section and never contain a secret.

/// Why a client cannot be built from a settings section.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{section}.hosts: invalid host {host:?}: {reason}")]
    Host {
        section: String,
        host: String,
        reason: String,
    },
    #[error("{section}.hosts must not be empty")]
    NoHosts { section: String },
    #[error("{section}.headers: invalid header {name:?}")]
    Header { section: String, name: String },
    #[error("{section}.ssl: {reason}")]
    Tls { section: String, reason: String },
    #[error("{section}.proxy_url: {reason}")]
    Proxy { section: String, reason: String },
    #[error("{section}: cannot build the HTTP client: {reason}")]
    Build { section: String, reason: String },
}
