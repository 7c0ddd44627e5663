//! Loading `.apm-agent-configuration` from Elasticsearch: a scroll search of
//! the whole index, repeated every `apm-server.agent.config.cache.expiration`
//! on a dedicated thread (see docs/agent-config.md).
//!
//! Job: resolve the client settings (`apm-server.agent.config.elasticsearch`
//! layered over `output.elasticsearch`, see [`effective_client`]) into an
//! [`es::Client`] — TLS, client certificate and verification mode included,
//! like every other Elasticsearch caller — then run
//! [`refresh`] in a loop, publishing each complete snapshot into
//! [`AgentConfigs`].
//!
//! Invariants:
//! * Runs on its own thread and tokio runtime: never on, never blocking, the
//!   HTTP executor. Each refresh is bounded by [`REFRESH_TIMEOUT`].
//! * At most [`MAX_DOCS`] documents are kept (a warning is logged when the
//!   index holds more); a snapshot is published only when complete.
//! * 401/403 marks the configuration invalid and ends the loop; any other
//!   failure keeps the previous snapshot and retries at the next tick.
//! * 404 `index_not_found_exception` is an empty snapshot (decision: no
//!   index = no configuration) unless a Kibana fallback exists, which then
//!   keeps answering (as apm-server, where any 404 is a refresh error).
//! * Scroll contexts are cleared after use, best effort.
//! * Credentials never appear in logs or errors (headers marked sensitive).

use super::{setting_string, AgentConfig, AgentConfigs, CacheState, ConfigDoc};
use crate::config::{Config, EsClient};
use crate::es;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The index holding agent configurations.
pub const INDEX: &str = ".apm-agent-configuration";
/// Documents per scroll page.
pub const PAGE_SIZE: usize = 100;
/// Upper bound of documents kept in memory.
pub const MAX_DOCS: usize = 10_000;
/// Budget of one whole refresh (all pages).
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read from Elasticsearch (one page).
const MAX_BODY: usize = 16 << 20;

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// 401/403: credentials rejected, refreshing stops.
    #[error("refresh cache elasticsearch returned status {0}")]
    Rejected(u16),
    #[error("refresh cache elasticsearch returned status {0}")]
    Status(u16),
    #[error("refresh cache: {0}")]
    Transport(String),
    #[error("refresh cache: invalid response: {0}")]
    Decode(String),
    #[error("refresh cache: timed out after {0:?}")]
    Timeout(Duration),
}

/// Resolved connection settings.
#[derive(Clone)]
pub struct EsSource {
    client: es::Client,
    /// Scroll keep-alive and refresh interval.
    pub interval: Duration,
    /// Documents per scroll page ([`PAGE_SIZE`]).
    pub page_size: usize,
}

impl std::fmt::Debug for EsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsSource")
            .field("client", &self.client)
            .field("interval", &self.interval)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

/// The effective client settings: the explicit section layered key by key
/// over `output.elasticsearch` (a key left at its default does not
/// override); if the explicit section sets any credential, the output's
/// credentials are dropped first. Without an explicit section: the output's
/// settings, else the defaults (`localhost:9200`).
pub fn effective_client(cfg: &Config) -> EsClient {
    let base: EsClient = cfg
        .output
        .elasticsearch
        .as_ref()
        .map(|o| o.client.clone())
        .unwrap_or_default();
    let Some(ex) = &cfg.apm_server.agent.config.elasticsearch else {
        return base;
    };
    let d = EsClient::default();
    let mut out = base;
    if !ex.username.is_empty() || !ex.password.is_empty() || !ex.api_key.is_empty() {
        out.username = String::new();
        out.password = Default::default();
        out.api_key = Default::default();
    }
    if ex.hosts != d.hosts {
        out.hosts = ex.hosts.clone();
    }
    if ex.protocol != d.protocol {
        out.protocol = ex.protocol.clone();
    }
    if ex.path != d.path {
        out.path = ex.path.clone();
    }
    if !ex.username.is_empty() {
        out.username = ex.username.clone();
    }
    if !ex.password.is_empty() {
        out.password = ex.password.clone();
    }
    if !ex.api_key.is_empty() {
        out.api_key = ex.api_key.clone();
    }
    if !ex.headers.is_empty() {
        out.headers = ex.headers.clone();
    }
    if !ex.proxy_url.is_empty() {
        out.proxy_url = ex.proxy_url.clone();
    }
    if ex.proxy_disable {
        out.proxy_disable = true;
    }
    if ex.timeout.get() != d.timeout.get() {
        out.timeout = ex.timeout;
    }
    if ex.ssl.is_some() {
        out.ssl = ex.ssl.clone();
    }
    out
}

impl EsSource {
    /// Builds the client of the effective settings (a start-up error when
    /// they are invalid, e.g. an unreadable CA or client certificate).
    pub fn from_config(cfg: &Config) -> Result<Self, es::Error> {
        let settings = es::Settings::elasticsearch(
            "apm-server.agent.config.elasticsearch",
            &effective_client(cfg),
            es::Credentials::FromSettings,
        )?;
        Ok(Self::new(es::Client::new(&settings)?, cfg))
    }

    /// Uses `client`, with the refresh interval of `cfg`.
    pub fn new(client: es::Client, cfg: &Config) -> Self {
        EsSource {
            client,
            interval: cfg.apm_server.agent.config.cache.expiration.get(),
            page_size: PAGE_SIZE,
        }
    }

    /// The client timeout, at most [`REFRESH_TIMEOUT`].
    fn request_timeout(&self) -> Duration {
        self.client.timeout().min(REFRESH_TIMEOUT)
    }

    /// `scheme://host:port[/path]` of every host, no trailing `/`.
    fn bases(&self) -> Vec<String> {
        self.client
            .hosts()
            .urls()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .collect()
    }
}

/// Reads a response body, refusing more than [`MAX_BODY`] bytes.
async fn read_body(mut r: reqwest::Response) -> Result<Vec<u8>, RefreshError> {
    let mut out = Vec::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| RefreshError::Transport(e.without_url().to_string()))?
    {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(RefreshError::Decode("response too large".into()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// One page: the hits and the scroll id.
struct Page {
    docs: Vec<Value>,
    scroll_id: Option<String>,
}

/// `None` = the index does not exist.
async fn page(req: reqwest::RequestBuilder) -> Result<Option<Page>, RefreshError> {
    let r = req
        .send()
        .await
        .map_err(|e| RefreshError::Transport(e.without_url().to_string()))?;
    let status = r.status().as_u16();
    let body = read_body(r).await?;
    match status {
        200..=299 => {}
        401 | 403 => return Err(RefreshError::Rejected(status)),
        404 => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if v["error"]["type"] == "index_not_found_exception" {
                return Ok(None);
            }
            return Err(RefreshError::Status(status));
        }
        s => return Err(RefreshError::Status(s)),
    }
    let mut v: Value =
        serde_json::from_slice(&body).map_err(|e| RefreshError::Decode(e.to_string()))?;
    let scroll_id = v["_scroll_id"].as_str().map(str::to_string);
    let docs = match v["hits"]["hits"].take() {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => return Err(RefreshError::Decode("hits.hits is not an array".into())),
    };
    Ok(Some(Page { docs, scroll_id }))
}

/// A document's `_source` as a [`ConfigDoc`]; `None` when malformed.
pub fn parse_doc(hit: &Value) -> Option<ConfigDoc> {
    let src = hit.get("_source")?;
    let s = |v: &Value| v.as_str().map(str::to_string);
    let service = src.get("service");
    let settings = src
        .get("settings")?
        .as_object()?
        .iter()
        .map(|(k, v)| (k.clone(), setting_string(v)))
        .collect();
    Some(ConfigDoc {
        service_name: service
            .and_then(|x| x.get("name"))
            .and_then(s)
            .unwrap_or_default(),
        service_environment: service
            .and_then(|x| x.get("environment"))
            .and_then(s)
            .unwrap_or_default(),
        config: AgentConfig {
            settings,
            etag: src.get("etag").and_then(s).unwrap_or_default(),
            agent_name: src.get("agent_name").and_then(s).unwrap_or_default(),
        },
    })
}

/// Loads the whole index from `base` (one host); `None` = no such index.
async fn load(src: &EsSource, base: &str) -> Result<Option<Vec<ConfigDoc>>, RefreshError> {
    let keep = format!("{}ms", src.interval.as_millis().max(1000));
    let first = src
        .client
        .request(reqwest::Method::POST, format!("{base}/{INDEX}/_search"))
        .timeout(src.request_timeout())
        .query(&[
            ("scroll", keep.as_str()),
            ("size", &src.page_size.to_string()),
        ]);
    let Some(mut p) = page(first).await? else {
        return Ok(None);
    };
    let mut docs = Vec::new();
    let mut skipped = 0usize;
    let mut capped = false;
    let mut last_id = p.scroll_id.clone();
    loop {
        if p.docs.is_empty() {
            break;
        }
        for hit in &p.docs {
            if docs.len() >= MAX_DOCS {
                capped = true;
                break;
            }
            match parse_doc(hit) {
                Some(d) => docs.push(d),
                None => skipped += 1,
            }
        }
        if capped {
            break;
        }
        let Some(id) = p.scroll_id.clone() else {
            break;
        };
        let next = src
            .client
            .request(reqwest::Method::POST, format!("{base}/_search/scroll"))
            .timeout(src.request_timeout())
            .query(&[("scroll", keep.as_str()), ("scroll_id", id.as_str())]);
        p = match page(next).await? {
            Some(p) => p,
            None => break,
        };
        if p.scroll_id.is_some() {
            last_id = p.scroll_id.clone();
        }
    }
    if let Some(id) = last_id {
        let path_id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        if let Err(e) = src
            .client
            .request(
                reqwest::Method::DELETE,
                format!("{base}/_search/scroll/{path_id}"),
            )
            .timeout(src.request_timeout())
            .send()
            .await
        {
            tracing::debug!(error = %e.without_url(), "agent config: clearing the scroll failed");
        }
    }
    if capped {
        tracing::warn!(
            kept = MAX_DOCS,
            "agent config: {INDEX} holds more documents than apm-rs keeps; the rest are ignored"
        );
    }
    if skipped > 0 {
        tracing::warn!(skipped, "agent config: malformed documents ignored");
    }
    Ok(Some(docs))
}

/// One refresh: every host in turn until one answers (auth and HTTP errors
/// are answers; only transport errors move on to the next host).
pub async fn refresh(src: &EsSource) -> Result<Option<Vec<ConfigDoc>>, RefreshError> {
    let mut last = RefreshError::Transport("no hosts configured".into());
    for base in &src.bases() {
        match tokio::time::timeout(REFRESH_TIMEOUT, load(src, base)).await {
            Err(_) => last = RefreshError::Timeout(REFRESH_TIMEOUT),
            Ok(Err(e @ RefreshError::Transport(_))) => last = e,
            Ok(r) => return r,
        }
    }
    Err(last)
}

/// Refresh metrics, registered on the server's registry (prefix `apm_rs_`).
#[derive(Clone)]
pub struct RefreshMetrics {
    /// `agentcfg_refresh_total{outcome}`: `ok`, `rejected`, `error`.
    pub refreshes: prometheus::IntCounterVec,
    /// `agentcfg_documents`: documents in the current snapshot.
    pub documents: prometheus::IntGauge,
}

impl RefreshMetrics {
    /// Registers the metrics on `reg` (a second registration on the same
    /// registry is left unregistered rather than failing).
    pub fn new(reg: &prometheus::Registry) -> Self {
        let refreshes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "agentcfg_refresh_total",
                "Refreshes of the agent configuration cache from Elasticsearch, by outcome.",
            ),
            &["outcome"],
        )
        .expect("static metric definition");
        let documents = prometheus::IntGauge::new(
            "agentcfg_documents",
            "Agent configuration documents in the cache.",
        )
        .expect("static metric definition");
        let _ = reg.register(Box::new(refreshes.clone()));
        let _ = reg.register(Box::new(documents.clone()));
        RefreshMetrics {
            refreshes,
            documents,
        }
    }
}

/// The refresh loop (runs until stopped or the credentials are rejected).
async fn run(
    src: EsSource,
    target: std::sync::Weak<AgentConfigs>,
    metrics: RefreshMetrics,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    // Repeated identical failures are logged once at warn, then at debug.
    let mut last_error: Option<String> = None;
    loop {
        let result = refresh(&src).await;
        let Some(t) = target.upgrade() else { return };
        match result {
            Ok(None) if t.has_fallback() => {
                metrics.refreshes.with_label_values(&["ok"]).inc();
                tracing::debug!("agent config: {INDEX} does not exist; using the Kibana fallback");
            }
            Ok(docs) => {
                let docs = docs.unwrap_or_default();
                metrics.refreshes.with_label_values(&["ok"]).inc();
                metrics.documents.set(docs.len() as i64);
                if last_error.take().is_some() {
                    tracing::info!(documents = docs.len(), "agent config refresh recovered");
                }
                tracing::debug!(documents = docs.len(), "agent config refreshed");
                t.set(CacheState::Ready(Arc::new(docs)));
            }
            Err(e @ RefreshError::Rejected(_)) => {
                metrics.refreshes.with_label_values(&["rejected"]).inc();
                tracing::error!(error = %e, "agent config: Elasticsearch rejected the credentials; agent configuration is unavailable until restart");
                t.set(CacheState::Invalid);
                return;
            }
            Err(e) => {
                metrics.refreshes.with_label_values(&["error"]).inc();
                let text = e.to_string();
                if last_error.as_deref() == Some(text.as_str()) {
                    tracing::debug!(error = %text, "agent config refresh failed");
                } else {
                    tracing::warn!(error = %text, "agent config refresh failed");
                    last_error = Some(text);
                }
            }
        }
        drop(t);
        tokio::select! {
            _ = tokio::time::sleep(src.interval) => {}
            _ = &mut stop => return,
        }
    }
}

/// Starts refreshing `target` from `src` on a dedicated thread. The thread
/// ends when [`AgentConfigs::stop`] is called or `target` is dropped.
pub fn spawn_refresher(
    src: EsSource,
    target: &Arc<AgentConfigs>,
    metrics: RefreshMetrics,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    target.set_stop(tx);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let weak = Arc::downgrade(target);
    std::thread::Builder::new()
        .name("agentcfg-refresh".into())
        .spawn(move || rt.block_on(run(src, weak, metrics, rx)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_rule() {
        let c = crate::config::from_overrides([
            "output.elasticsearch.hosts=[\"out:9200\"]",
            "output.elasticsearch.username=u",
            "output.elasticsearch.password=p",
            "apm-server.agent.config.elasticsearch.api_key=id:key",
        ])
        .unwrap();
        let e = effective_client(&c);
        assert_eq!(e.hosts, vec!["out:9200".to_string()]);
        assert!(e.username.is_empty() && e.password.is_empty());
        assert_eq!(e.api_key.expose(), "id:key");
        let c = crate::config::from_overrides(["output.elasticsearch.username=u"]).unwrap();
        assert_eq!(effective_client(&c).username, "u");
        let d = crate::config::from_overrides(Vec::<String>::new()).unwrap();
        assert_eq!(
            effective_client(&d).hosts,
            vec!["localhost:9200".to_string()]
        );
    }

    fn source(es: &es_double::EsDouble, page_size: usize) -> EsSource {
        let c = crate::config::from_overrides([format!(
            "apm-server.agent.config.elasticsearch.hosts=[\"{}\"]",
            es.host()
        )])
        .unwrap();
        EsSource {
            page_size,
            ..EsSource::from_config(&c).unwrap()
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn scroll_p135() {
        let es = es_double::EsDouble::start();
        for (id, name) in [("1", "first"), ("2", "second"), ("3", "third")] {
            es.put_doc(
                INDEX,
                id,
                serde_json::json!({"service":{"name":name},"etag":format!("e{id}"),"settings":{"k":name}}),
            );
        }
        for page_size in [1, 2, 100] {
            let docs = rt()
                .block_on(refresh(&source(&es, page_size)))
                .unwrap()
                .unwrap();
            let names: Vec<_> = docs.iter().map(|d| d.service_name.as_str()).collect();
            assert_eq!(names, ["first", "second", "third"], "page size {page_size}");
            assert_eq!(docs[0].config.etag, "e1");
        }
        assert_eq!(es.open_scrolls(), 0, "scrolls are cleared");
    }

    #[test]
    fn capped_at_max_docs() {
        let es = es_double::EsDouble::start();
        for i in 0..MAX_DOCS + 5 {
            es.put_doc(
                INDEX,
                &i.to_string(),
                serde_json::json!({"service":{"name":format!("s{i}")},"etag":"e","settings":{}}),
            );
        }
        let docs = rt().block_on(refresh(&source(&es, 2000))).unwrap().unwrap();
        assert_eq!(docs.len(), MAX_DOCS);
        assert_eq!(es.open_scrolls(), 0, "scroll cleared after capping");
    }

    #[test]
    fn missing_index_is_empty() {
        let es = es_double::EsDouble::start();
        let docs = rt().block_on(refresh(&source(&es, 100))).unwrap();
        assert!(docs.is_none());
    }

    #[test]
    fn unreachable_is_transport_error() {
        let c = crate::config::from_overrides([
            "apm-server.agent.config.elasticsearch.hosts=[\"127.0.0.1:1\"]",
        ])
        .unwrap();
        let e = rt()
            .block_on(refresh(&EsSource::from_config(&c).unwrap()))
            .unwrap_err();
        assert!(matches!(e, RefreshError::Transport(_)), "{e}");
    }

    #[test]
    fn parse_docs() {
        let h = serde_json::json!({"_id":"1","_source":{"service":{"name":"a"},"agent_name":"rum-js","etag":"123","settings":{"transaction_sample_rate":0.3,"x":"y"}}});
        let d = parse_doc(&h).unwrap();
        assert_eq!(d.service_name, "a");
        assert_eq!(d.service_environment, "");
        assert_eq!(d.config.etag, "123");
        assert_eq!(d.config.settings["transaction_sample_rate"], "0.3");
        assert!(parse_doc(&serde_json::json!({"_source":{"etag":"1"}})).is_none());
        assert!(parse_doc(&serde_json::json!("x")).is_none());
    }
}
