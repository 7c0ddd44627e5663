//! [`Client`]: one HTTP connection pool (rustls) with the section's TLS,
//! proxy and timeout, the host pool, and the headers every request carries.
//!
//! Invariants: the only place a `reqwest::Client` is built for
//! Elasticsearch or Kibana; cloning shares the connection pool and the
//! host state; no redirects are followed (a redirect would resend the
//! credentials to another host).

use super::{tls, Error, HostPool, Settings};
use reqwest::header::HeaderMap;
use std::sync::Arc;
use std::time::Duration;

/// A client of one cluster (cheap to clone).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    hosts: Arc<HostPool>,
    headers: Arc<HeaderMap>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hosts", &self.hosts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client of `s` (reads the TLS files; contacts nobody).
    pub fn new(s: &Settings) -> Result<Self, Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(s.timeout)
            .connect_timeout(s.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if s.proxy_disable {
            b = b.no_proxy();
        } else if !s.proxy_url.is_empty() {
            let p = reqwest::Proxy::all(&s.proxy_url).map_err(|e| Error::Proxy {
                section: s.section.clone(),
                reason: e.to_string(),
            })?;
            b = b.proxy(p);
        }
        if let Some(t) = &s.tls {
            b = tls::apply(b, t, &s.section).map_err(|reason| Error::Tls {
                section: s.section.clone(),
                reason,
            })?;
        }
        let http = b.build().map_err(|e| Error::Build {
            section: s.section.clone(),
            reason: e.to_string(),
        })?;
        Ok(Client {
            http,
            hosts: Arc::new(HostPool::new(&s.hosts, s.backoff_init, s.backoff_max)),
            headers: Arc::new(s.headers.clone()),
            timeout: s.timeout,
        })
    }

    /// The same connection pool and hosts without credentials: every
    /// request must carry its own `Authorization` (see `Credentials::PerRequest`).
    pub fn without_credentials(&self) -> Self {
        let mut headers = (*self.headers).clone();
        headers.remove(reqwest::header::AUTHORIZATION);
        Client {
            headers: Arc::new(headers),
            ..self.clone()
        }
    }

    /// A request to `url` with the section's headers.
    pub fn request<U: reqwest::IntoUrl>(
        &self,
        method: reqwest::Method,
        url: U,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .headers((*self.headers).clone())
    }

    pub fn hosts(&self) -> &HostPool {
        &self.hosts
    }

    /// The section's request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
