//! Admission of a gRPC call from its metadata, as the HTTP backend routes
//! admit a request: the client address (peer plus forwarding metadata
//! `forwarded` / `x-real-ip` / `x-forwarded-for`, under the trusted-proxy
//! rules of [`crate::http::client_ip`]), the `authorization` metadata
//! (`Bearer <secret token>` / `ApiKey <key>`) checked by the shared
//! authenticator, then one token of an anonymous client's per-IP bucket.
//!
//! Every method is open to anonymous clients when anonymous access is on
//! (as in apm-server); which of their events are kept is decided per event
//! by the allow lists (`allow_agent` against `opentelemetry/<language>` or
//! the mobile SDK's name, `allow_service`) in the pipeline.

use super::status;
use crate::auth::AuthResult;
use crate::http::client_ip::{self, ClientAddr, Headers};
use crate::http::AppState;
use http::HeaderMap;
use std::net::SocketAddr;
use tonic::Status;

impl Headers for HeaderMap {
    fn lines(&self, name: &str) -> Vec<&str> {
        self.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or_default())
            .collect()
    }
}

/// An admitted call: who it is and where it comes from.
pub struct Admitted {
    pub auth: AuthResult,
    pub addr: ClientAddr,
}

/// Authenticates the call and takes the anonymous per-IP token.
pub async fn admit(
    state: &AppState,
    peer: Option<SocketAddr>,
    metadata: &HeaderMap,
) -> Result<Admitted, Status> {
    let addr = client_ip::derive(peer, metadata, &state.trusted);
    // A value that is not ASCII is still a credential: checked as sent (it
    // cannot match), never taken for an absent one.
    let header = metadata
        .get(http::header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let auth = state
        .authenticator
        .authenticate(header.as_deref())
        .await
        .map_err(|e| status::of_auth(&e))?;
    if auth.is_anonymous()
        && !state
            .limiter
            .allow(crate::ratelimit::key_of(addr.client_ip))
    {
        state.telemetry.rate_limited_requests.inc();
        return Err(Status::resource_exhausted(status::RATE_LIMITED));
    }
    Ok(Admitted { auth, addr })
}
