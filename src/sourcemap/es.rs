//! Elasticsearch access for `.apm-source-map`: the metadata scroll, the
//! document GET, and the document PUT of an upload (see
//! docs/elasticsearch.md).
//!
//! The cluster is `apm-server.rum.source_mapping.elasticsearch` merged over
//! `output.elasticsearch` key by key (if the source-mapping
//! section sets any credential, the output's credentials are dropped first);
//! `localhost:9200` when neither is configured.
//!
//! Invariants: every request has the client timeout; response bodies are
//! read with a size bound; metadata loads are bounded in entries.

use super::paths::escape_segment;
use super::SourcemapError;
use crate::config::{Config, EsClient};
use crate::es;
use reqwest::Method;
use serde_json::{json, Value};

/// The fixed index (the old `index_pattern` setting is ignored).
pub const INDEX: &str = ".apm-source-map";
/// Most metadata entries kept (bounds memory against a huge index).
pub const MAX_ENTRIES: usize = 100_000;
/// Scroll page size.
const PAGE: usize = 1000;
/// Most bytes of an error body quoted in an error text.
const ERR_BODY: usize = 512;

/// One stored map's identity and hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetaEntry {
    pub service: String,
    pub version: String,
    pub path: String,
    pub sha256: String,
}

/// Client for the source-map index.
pub struct SourcemapEs {
    client: es::Client,
}

impl std::fmt::Debug for SourcemapEs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourcemapEs")
            .field("client", &self.client)
            .finish()
    }
}

/// The effective client settings (the credential rule of the module doc).
pub fn effective_settings(cfg: &Config) -> EsClient {
    let mut base: EsClient = cfg
        .output
        .elasticsearch
        .as_ref()
        .map(|o| o.client.clone())
        .unwrap_or_default();
    let Some(sm) = &cfg.apm_server.rum.source_mapping.elasticsearch else {
        return base;
    };
    let d = EsClient::default();
    if !sm.api_key.is_empty() || !sm.username.is_empty() || !sm.password.is_empty() {
        base.api_key = sm.api_key.clone();
        base.username = sm.username.clone();
        base.password = sm.password.clone();
    }
    if sm.hosts != d.hosts {
        base.hosts = sm.hosts.clone();
    }
    if sm.protocol != d.protocol {
        base.protocol = sm.protocol.clone();
    }
    if !sm.path.is_empty() {
        base.path = sm.path.clone();
    }
    if !sm.headers.is_empty() {
        base.headers = sm.headers.clone();
    }
    if !sm.proxy_url.is_empty() {
        base.proxy_url = sm.proxy_url.clone();
    }
    if sm.proxy_disable {
        base.proxy_disable = true;
    }
    if sm.timeout.get() != d.timeout.get() {
        base.timeout = sm.timeout;
    }
    if sm.max_retries != d.max_retries {
        base.max_retries = sm.max_retries;
    }
    if sm.ssl.is_some() {
        base.ssl = sm.ssl.clone();
    }
    base
}

/// Reads at most `limit` bytes of a response body.
async fn read_bounded(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, SourcemapError> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| SourcemapError::Query(error_chain(&e)))?
    {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(SourcemapError::Query(format!(
                "response body exceeds {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `e` and its causes, `: `-joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Classifies a non-success status: 401/403/404 mean the store is
/// unavailable (body quoted), anything else is an unknown status.
async fn status_error(resp: reqwest::Response) -> SourcemapError {
    let status = resp.status();
    let line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if matches!(status.as_u16(), 401 | 403 | 404) {
        let body = read_bounded(resp, 1 << 20).await.unwrap_or_default();
        let body = String::from_utf8_lossy(&body[..body.len().min(ERR_BODY)]).into_owned();
        SourcemapError::Unavailable(format!("{line}: {body}"))
    } else {
        SourcemapError::UnknownStatus(line)
    }
}

impl SourcemapEs {
    /// Builds the client from the configuration.
    pub fn from_config(cfg: &Config) -> Result<SourcemapEs, es::Error> {
        let mut settings = es::Settings::elasticsearch(
            "apm-server.rum.source_mapping.elasticsearch",
            &effective_settings(cfg),
            es::Credentials::FromSettings,
        )?;
        settings.headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        Ok(SourcemapEs::new(es::Client::new(&settings)?))
    }

    /// Uses `client` (its requests must send `Content-Type: application/json`).
    pub fn new(client: es::Client) -> SourcemapEs {
        SourcemapEs { client }
    }

    /// A request to the next host.
    fn request(&self, method: Method, path_and_query: &str) -> reqwest::RequestBuilder {
        let hosts = self.client.hosts();
        let base = hosts
            .base_url(hosts.pick())
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_else(|| "http://localhost:9200".into());
        self.client
            .request(method, format!("{base}{path_and_query}"))
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SourcemapError> {
        req.send()
            .await
            .map_err(|e| SourcemapError::Query(error_chain(&e)))
    }

    async fn json_of(resp: reqwest::Response) -> Result<Value, SourcemapError> {
        let body = read_bounded(resp, 256 << 20).await?;
        serde_json::from_slice(&body)
            .map_err(|e| SourcemapError::Query(format!("invalid response: {e}")))
    }

    /// Loads every `(service.name, service.version, file.path) → content_sha256`
    /// with a scroll. A missing index is an empty index.
    pub async fn load_metadata(&self) -> Result<Vec<MetaEntry>, SourcemapError> {
        let resp = self
            .send(
                self.request(Method::POST, &format!(
                        "/{INDEX}/_search?_source=service.*,file.path,content_sha256&track_total_hits=true&scroll=60000ms"
                    ))
                    .body(json!({"size": PAGE}).to_string()),
            )
            .await?;
        if resp.status().as_u16() == 404 {
            let v = Self::json_of(resp).await.unwrap_or(Value::Null);
            if v.pointer("/error/type").and_then(Value::as_str) == Some("index_not_found_exception")
            {
                return Ok(Vec::new());
            }
            return Err(SourcemapError::Unavailable(format!("404 Not Found: {v}")));
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let mut page = Self::json_of(resp).await?;
        let mut out = Vec::new();
        let mut scroll_id: Option<String> = None;
        let result = loop {
            if let Some(id) = page.get("_scroll_id").and_then(Value::as_str) {
                scroll_id = Some(id.to_string());
            }
            let hits = page
                .pointer("/hits/hits")
                .and_then(Value::as_array)
                .map(|a| a.as_slice())
                .unwrap_or(&[]);
            if hits.is_empty() {
                break Ok(());
            }
            for h in hits {
                if out.len() >= MAX_ENTRIES {
                    tracing::warn!(
                        max = MAX_ENTRIES,
                        "too many stored source maps; ignoring the rest"
                    );
                    break;
                }
                let src = h.get("_source").unwrap_or(&Value::Null);
                let s = |p: &str| {
                    src.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let e = MetaEntry {
                    service: s("/service/name"),
                    version: s("/service/version"),
                    path: s("/file/path"),
                    sha256: s("/content_sha256"),
                };
                if !e.service.is_empty() && !e.path.is_empty() {
                    out.push(e);
                }
            }
            if out.len() >= MAX_ENTRIES {
                break Ok(());
            }
            let Some(id) = scroll_id.clone() else {
                break Ok(());
            };
            let resp = match self
                .send(
                    self.request(Method::POST, "/_search/scroll?scroll=60000ms")
                        .body(json!({"scroll": "60000ms", "scroll_id": id}).to_string()),
                )
                .await
            {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            if !resp.status().is_success() {
                break Err(status_error(resp).await);
            }
            page = match Self::json_of(resp).await {
                Ok(p) => p,
                Err(e) => break Err(e),
            };
        };
        if let Some(id) = scroll_id {
            let req = self.request(
                Method::DELETE,
                &format!("/_search/scroll/{}", escape_segment(&id)),
            );
            if let Err(e) = self.send(req).await {
                tracing::debug!(error = %e, "cannot clear the source-map scroll");
            }
        }
        result.map(|()| out)
    }

    /// The `content` of document `id`; `None` when the document is not found.
    pub async fn get_content(&self, id: &str) -> Result<Option<String>, SourcemapError> {
        let resp = self
            .send(self.request(
                Method::GET,
                &format!("/{INDEX}/_doc/{}", escape_segment(id)),
            ))
            .await?;
        let status = resp.status().as_u16();
        if status == 404 {
            let v = Self::json_of(resp).await.unwrap_or(Value::Null);
            if v.get("found") == Some(&Value::Bool(false)) {
                return Ok(None);
            }
            return Err(SourcemapError::Unavailable(format!("404 Not Found: {v}")));
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let v = Self::json_of(resp).await?;
        if v.get("found") == Some(&Value::Bool(false)) {
            return Ok(None);
        }
        match v.pointer("/_source/content").and_then(Value::as_str) {
            Some(c) => Ok(Some(c.to_string())),
            None => Err(SourcemapError::Malformed("document has no content".into())),
        }
    }

    /// Writes document `id` (refreshing the index so searches see it).
    pub async fn put_doc(&self, id: &str, doc: &Value) -> Result<(), SourcemapError> {
        let resp = self
            .send(
                self.request(
                    Method::PUT,
                    &format!("/{INDEX}/_doc/{}?refresh=true", escape_segment(id)),
                )
                .body(doc.to_string()),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(status_error(resp).await)
        }
    }
}
