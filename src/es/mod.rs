//! The one Elasticsearch (and Kibana) HTTP client of apm-rs.
//!
//! Job: turn a client settings section (`output.elasticsearch`,
//! `apm-server.auth.api_key.elasticsearch`,
//! `apm-server.agent.config.elasticsearch`,
//! `apm-server.rum.source_mapping.elasticsearch`, `apm-server.kibana`) into a
//! [`Client`]: resolved host URLs used round-robin with a failed host skipped
//! for a while ([`HostPool`]), the credentials and configured headers, and
//! one HTTP connection pool with the section's TLS (CA, verification mode,
//! client certificate), proxy and timeout. Every caller (output bulk,
//! API-key check, source-map fetch and upload, agent configuration from
//! Elasticsearch and Kibana) builds its client here and nowhere else.
//!
//! Why not Elastic's `elasticsearch` crate: its `TransportBuilder` builds
//! its own `reqwest` client and exposes no way to hand it a prepared TLS
//! configuration or client. Under rustls it cannot express the
//! `certificate` verification mode (CA check without host-name check; the
//! crate offers that mode for native-tls only, and native-tls/OpenSSL is
//! not allowed in this tree), and its connection pools take no feedback on
//! failed hosts, so the per-host skip below would live beside it as a second
//! host list. Using it would have meant two HTTP clients per cluster with
//! diverging TLS — the defect this module removes — so the calls we make
//! (`GET /`, `_has_privileges`, search + scroll, document get/put, `_bulk`)
//! are plain requests on this client. See docs/elasticsearch.md.
//!
//! One client per caller, not one process-wide instance: each caller
//! resolves its own settings section (they may name other clusters or
//! credentials), and its connections belong to the runtime that opened them
//! (the output's runtime, the HTTP workers, the agent-config thread). Those
//! runtimes stop at different moments of a shutdown; a connection shared
//! across them would fail in-flight bulks of the output when, say, the
//! agent-config thread stops first.
//!
//! Invariants:
//! * TLS is rustls only; `verification_mode` is honoured for every caller.
//! * Secrets only ever become header values marked sensitive; they are never
//!   logged or put in an error.
//! * Every host URL has a scheme, a port (9200 for Elasticsearch when none
//!   was given, as libbeat does) and no trailing `/`.
//! * One `User-Agent` ([`USER_AGENT`]) for every caller.

mod client;
mod error;
mod hosts;
mod settings;
mod tls;

pub use client::Client;
pub use error::Error;
pub use hosts::HostPool;
pub use settings::{resolve_host, Credentials, Settings};

/// The `User-Agent` of every request to Elasticsearch and Kibana (a
/// configured `User-Agent` header replaces it). apm-server sends its own
/// version; we send the apm-server release we are a drop-in for
/// ([`crate::version::COMPAT_VERSION`], checked by a test).
pub const USER_AGENT: &str = concat!(
    "Elastic-APM-Server/9.5.2 apm-rs/",
    env!("CARGO_PKG_VERSION")
);

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_agent_names_the_apm_server_version_we_are_compatible_with() {
        let want = format!(
            "Elastic-APM-Server/{} apm-rs/{}",
            crate::version::COMPAT_VERSION,
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(super::USER_AGENT, want);
    }
}
