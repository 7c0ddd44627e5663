//! Resolved settings of the Elasticsearch output: `output.elasticsearch.*`
//! turned into host URLs, request headers (auth included), a TLS-configured
//! HTTP client and the bulk/retry tuning.
//!
//! Invariants: secrets are exposed only to build header values, which are
//! marked sensitive; every host URL has a scheme and a port (9200 when none
//! was given, as libbeat does) and no trailing `/`; no OpenSSL is involved
//! (reqwest with rustls).

use crate::config::{ClientTls, EsOutput};
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;
use url::Url;

/// Why the output's settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("output.elasticsearch.hosts: invalid host {host:?}: {reason}")]
    Host { host: String, reason: String },
    #[error("output.elasticsearch.hosts must not be empty")]
    NoHosts,
    #[error("output.elasticsearch.headers: invalid header {0:?}")]
    Header(String),
    #[error("output.elasticsearch.ssl: {0}")]
    Tls(String),
    #[error("output.elasticsearch.proxy_url: {0}")]
    Proxy(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The default `User-Agent` (overridable through `headers`).
pub const USER_AGENT: &str = concat!(
    "Elastic-APM-Server/9.1.0 apm-rs/",
    env!("CARGO_PKG_VERSION")
);

/// Query string of every bulk request (documents.md §4.4).
pub const BULK_QUERY: &str = "require_data_stream=true&filter_path=items.*._index,items.*.status,items.*.failure_store,items.*.error.type,items.*.error.reason&include_source_on_error=false";

/// Everything the output needs, resolved once at start-up.
#[derive(Clone, Debug)]
pub struct EsSettings {
    /// Base URLs (`scheme://host:port[/path]`, no trailing `/`).
    pub hosts: Vec<Url>,
    /// Default, auth and configured headers sent with every request.
    pub headers: HeaderMap,
    pub timeout: Duration,
    /// gzip level 0..=9 (0 = no compression).
    pub compression_level: u32,
    /// Flush once the uncompressed bulk reaches this size.
    pub flush_bytes: usize,
    /// Flush a non-empty bulk at least this often.
    pub flush_interval: Duration,
    /// Bulk requests in flight at once, over all indexer instances.
    pub max_requests: usize,
    /// Resends of one document answered 429/5xx per item.
    pub max_retries: u32,
    pub backoff_init: Duration,
    pub backoff_max: Duration,
    /// How long a bulk failing as a whole (connection error, timeout, 429,
    /// 5xx) keeps being retried, counted from its first failure. Default:
    /// 5 × `backoff.max` (5 minutes with the defaults), and never fewer than
    /// `max_retries` attempts.
    pub retry_budget: Duration,
    /// Give every document a random `_id` chosen once, so a resent `create`
    /// answers 409 (counted as indexed) instead of indexing twice. Off by
    /// default: time-series data streams reject client-chosen ids.
    pub idempotent_ids: bool,
    /// How often the reachability check runs once Elasticsearch answered.
    pub ready_check_interval: Duration,
    tls: Option<ClientTls>,
    proxy_url: String,
    proxy_disable: bool,
}

fn resolve_host(raw: &str, protocol: &str, path: &str) -> Result<Url, SettingsError> {
    let err = |reason: String| SettingsError::Host {
        host: raw.to_string(),
        reason,
    };
    let raw_t = raw.trim();
    if raw_t.is_empty() {
        return Err(err("empty".into()));
    }
    let with_scheme = if raw_t.contains("://") {
        raw_t.to_string()
    } else {
        let proto = if protocol.is_empty() {
            "http"
        } else {
            protocol
        };
        format!("{proto}://{raw_t}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| err(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(format!("unsupported scheme {:?}", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("no host".into()));
    }
    if url.port().is_none() {
        url.set_port(Some(9200))
            .map_err(|()| err("cannot set port".into()))?;
    }
    if (url.path().is_empty() || url.path() == "/") && !path.trim().is_empty() {
        let p = path.trim();
        let p = if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        };
        url.set_path(&p);
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn sensitive(v: String) -> Result<HeaderValue, SettingsError> {
    let mut h =
        HeaderValue::from_str(&v).map_err(|_| SettingsError::Header("Authorization".into()))?;
    h.set_sensitive(true);
    Ok(h)
}

impl EsSettings {
    /// Resolves `output.elasticsearch`.
    pub fn from_config(es: &EsOutput) -> Result<Self, SettingsError> {
        let c = &es.client;
        if c.hosts.is_empty() {
            return Err(SettingsError::NoHosts);
        }
        let hosts = c
            .hosts
            .iter()
            .map(|h| resolve_host(h, &c.protocol, &c.path))
            .collect::<Result<Vec<_>, _>>()?;

        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-elastic-product-origin"),
            HeaderValue::from_static("observability"),
        );
        headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(USER_AGENT),
        );
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        if !c.api_key.is_empty() {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                sensitive(format!("ApiKey {}", b64.encode(c.api_key.expose())))?,
            );
        } else if !c.username.is_empty() {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                sensitive(format!(
                    "Basic {}",
                    b64.encode(format!("{}:{}", c.username, c.password.expose()))
                ))?,
            );
        }
        let mut first = std::collections::HashSet::new();
        for (name, values) in &c.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SettingsError::Header(name.clone()))?;
            for v in values.values() {
                let hv =
                    HeaderValue::from_str(v).map_err(|_| SettingsError::Header(name.clone()))?;
                // configured headers replace the defaults; several values are all sent
                if first.insert(n.clone()) {
                    headers.insert(n.clone(), hv);
                } else {
                    headers.append(n.clone(), hv);
                }
            }
        }

        let backoff_init = c.backoff.init.get().max(Duration::from_millis(1));
        let backoff_max = c.backoff.max.get().max(backoff_init);
        let min_flush = if es.compression_level > 0 {
            24 * 1024
        } else {
            1
        };
        Ok(EsSettings {
            hosts,
            headers,
            timeout: c.timeout.get(),
            compression_level: es.compression_level.min(9),
            flush_bytes: (es.flush_bytes.get() as usize).max(min_flush),
            flush_interval: es.flush_interval.get().max(Duration::from_millis(1)),
            max_requests: es.max_requests.max(1),
            max_retries: c.max_retries,
            backoff_init,
            backoff_max,
            retry_budget: backoff_max.saturating_mul(5),
            idempotent_ids: false,
            ready_check_interval: Duration::from_secs(5),
            tls: c.ssl.clone().filter(|t| t.enabled != Some(false)),
            proxy_url: c.proxy_url.clone(),
            proxy_disable: c.proxy_disable,
        })
    }

    /// Builds the HTTP client (rustls; CA, verification mode, client certificate, proxy).
    pub fn client(&self) -> Result<reqwest::Client, SettingsError> {
        let mut b = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .use_rustls_tls();
        if self.proxy_disable {
            b = b.no_proxy();
        } else if !self.proxy_url.is_empty() {
            let p = reqwest::Proxy::all(&self.proxy_url)
                .map_err(|e| SettingsError::Proxy(e.to_string()))?;
            b = b.proxy(p);
        }
        if let Some(tls) = &self.tls {
            b = apply_tls(b, tls)?;
        }
        b.build().map_err(|e| SettingsError::Client(e.to_string()))
    }
}

fn read(path: &str) -> Result<Vec<u8>, SettingsError> {
    std::fs::read(path).map_err(|e| SettingsError::Tls(format!("cannot read {path}: {e}")))
}

fn apply_tls(
    mut b: reqwest::ClientBuilder,
    tls: &ClientTls,
) -> Result<reqwest::ClientBuilder, SettingsError> {
    for ca in &tls.certificate_authorities {
        let pem = read(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SettingsError::Tls(format!("{ca}: {e}")))?;
        if certs.is_empty() {
            return Err(SettingsError::Tls(format!("{ca}: no certificate found")));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match tls.verification_mode.as_deref().unwrap_or("full") {
        "full" | "strict" => {}
        "certificate" => b = b.danger_accept_invalid_hostnames(true),
        "none" => {
            tracing::warn!("output.elasticsearch.ssl.verification_mode is none: server certificates are not verified");
            b = b.danger_accept_invalid_certs(true);
        }
        other => {
            return Err(SettingsError::Tls(format!(
                "unknown verification_mode {other:?} (full, strict, certificate, none)"
            )))
        }
    }
    match (tls.certificate.is_empty(), tls.key.is_empty()) {
        (true, true) => {}
        (false, false) => {
            if !tls.key_passphrase.is_empty() {
                return Err(SettingsError::Tls(
                    "encrypted client keys (key_passphrase) are not supported; decrypt the key"
                        .into(),
                ));
            }
            let mut pem = read(&tls.certificate)?;
            pem.push(b'\n');
            pem.extend(read(&tls.key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| SettingsError::Tls(format!("client certificate: {e}")))?;
            b = b.identity(id);
        }
        _ => {
            return Err(SettingsError::Tls(
                "certificate and key must be given together".into(),
            ))
        }
    }
    // supported_protocols: the lowest and highest recognised versions bound the handshake.
    let mut versions: Vec<u8> = Vec::new();
    for p in &tls.supported_protocols {
        match p.as_str() {
            "TLSv1.2" => versions.push(2),
            "TLSv1.3" => versions.push(3),
            other => tracing::warn!(
                protocol = other,
                "output.elasticsearch.ssl.supported_protocols: ignored (rustls supports TLSv1.2 and TLSv1.3)"
            ),
        }
    }
    let version = |v: u8| {
        if v == 3 {
            reqwest::tls::Version::TLS_1_3
        } else {
            reqwest::tls::Version::TLS_1_2
        }
    };
    if let (Some(lo), Some(hi)) = (versions.iter().min(), versions.iter().max()) {
        b = b
            .min_tls_version(version(*lo))
            .max_tls_version(version(*hi));
    }
    if !tls.cipher_suites.is_empty() || !tls.curve_types.is_empty() {
        tracing::warn!(
            "output.elasticsearch.ssl.cipher_suites / curve_types are ignored (rustls defaults)"
        );
    }
    Ok(b)
}
