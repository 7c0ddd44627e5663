//! Kibana fallback for agent configuration (see docs/agent-config.md): used only when
//! `apm-server.kibana.enabled` is true and
//! `apm-server.agent.config.elasticsearch` is not set explicitly, and only
//! while the Elasticsearch cache is not loaded (or its credentials were
//! rejected).
//!
//! Job: `POST <kibana>/api/apm/settings/agent-configuration/search` with the
//! query JSON; 404 = no configuration; answers cached per service name and
//! environment for `cache.expiration`.
//!
//! Invariants: the cache holds at most [`CACHE_SIZE`] entries (LRU) and its
//! lock is never held across an await; a response body is read up to
//! [`MAX_BODY`] bytes; a request is bounded by [`TIMEOUT`]; credentials are
//! only in sensitive header values, never in logs or error texts. Kibana is
//! another host than Elasticsearch, but its client is built by the same
//! [`crate::es`] code: same TLS (CA, client certificate, verification mode).

use super::{setting_string, AgentConfig, FetchError, Query};
use crate::config::Config;
use crate::es;
use lru::LruCache;
use parking_lot::Mutex;
use serde_json::Value;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// The Kibana endpoint queried.
pub const ENDPOINT: &str = "/api/apm/settings/agent-configuration/search";
/// Cached answers (service name + environment).
pub const CACHE_SIZE: usize = 8192;
/// Largest Kibana response body read.
pub const MAX_BODY: usize = 1 << 20;
/// Budget of one Kibana request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The Kibana client and its answer cache.
pub struct KibanaFetcher {
    url: String,
    client: es::Client,
    ttl: Duration,
    cache: Mutex<LruCache<(String, String), (Instant, AgentConfig)>>,
}

impl std::fmt::Debug for KibanaFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KibanaFetcher")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl KibanaFetcher {
    /// The fallback, when the configuration calls for one.
    pub fn from_config(cfg: &Config) -> Result<Option<Self>, es::Error> {
        let k = &cfg.apm_server.kibana;
        if !k.enabled || cfg.apm_server.agent.config.elasticsearch.is_some() {
            return Ok(None);
        }
        let settings = es::Settings::kibana(k, TIMEOUT)?;
        let client = es::Client::new(&settings)?;
        let base = client
            .hosts()
            .base_url(0)
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Ok(Some(KibanaFetcher {
            url: format!("{base}{ENDPOINT}"),
            client,
            ttl: cfg.apm_server.agent.config.cache.expiration.get(),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
        }))
    }

    /// Answers `q` from the cache or Kibana.
    pub async fn fetch(&self, q: &Query) -> Result<AgentConfig, FetchError> {
        let key = (q.service.name.clone(), q.service.environment.clone());
        if let Some((at, cfg)) = self.cache.lock().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(cfg.clone());
            }
        }
        let body = serde_json::to_vec(q).map_err(|e| FetchError::Other(e.to_string()))?;
        let mut r = self
            .client
            .request(reqwest::Method::POST, &self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| FetchError::KibanaSend(e.without_url().to_string()))?;
        let status = r.status().as_u16();
        let mut text = Vec::new();
        loop {
            match r.chunk().await {
                Ok(Some(c)) if text.len() + c.len() <= MAX_BODY => text.extend_from_slice(&c),
                Ok(Some(_)) => {
                    return Err(FetchError::KibanaBody("response too large".into()));
                }
                Ok(None) => break,
                Err(e) => return Err(FetchError::KibanaBody(e.without_url().to_string())),
            }
        }
        let cfg = match status {
            404 => AgentConfig::none(),
            s if s >= 400 => {
                let t = String::from_utf8_lossy(&text).into_owned();
                return Err(if t.contains("Unauthorized") {
                    FetchError::KibanaUnauthorized
                } else {
                    FetchError::Other(t)
                });
            }
            _ => parse_result(&text)?,
        };
        self.cache.lock().put(key, (Instant::now(), cfg.clone()));
        Ok(cfg)
    }
}

/// A Kibana search answer (case P.134): empty body = no config; settings
/// values become strings; a body that is not JSON is an error.
pub fn parse_result(body: &[u8]) -> Result<AgentConfig, FetchError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(AgentConfig::none());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| FetchError::Other(e.to_string()))?;
    let Some(src) = v.get("_source") else {
        return Ok(AgentConfig::none());
    };
    let settings = src
        .get("settings")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), setting_string(v)))
                .collect()
        })
        .unwrap_or_default();
    let s = |k: &str| {
        src.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(AgentConfig {
        settings,
        etag: s("etag"),
        agent_name: s("agent_name"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_p134() {
        let c = parse_result(
            br#"{"_id":"1","_source":{"etag":"123","settings":{"transaction_sampling_rate":0.3}}}"#,
        )
        .unwrap();
        assert_eq!(c.etag, "123");
        assert_eq!(c.settings["transaction_sampling_rate"], "0.3");
        assert_eq!(parse_result(b"").unwrap(), AgentConfig::none());
        assert!(parse_result(b"<html>").is_err());
    }

    #[test]
    fn only_without_explicit_es() {
        let c = crate::config::from_overrides(["apm-server.kibana.enabled=true"]).unwrap();
        assert!(KibanaFetcher::from_config(&c).unwrap().is_some());
        let c = crate::config::from_overrides([
            "apm-server.kibana.enabled=true",
            "apm-server.agent.config.elasticsearch.hosts=[\"es:9200\"]",
        ])
        .unwrap();
        assert!(KibanaFetcher::from_config(&c).unwrap().is_none());
        let c = crate::config::from_overrides(Vec::<String>::new()).unwrap();
        assert!(KibanaFetcher::from_config(&c).unwrap().is_none());
    }
}
