//! Agent central configuration (see docs/agent-config.md): the query agents send, the
//! documents of `.apm-agent-configuration`, how a query is matched against
//! them, and what anonymous callers may see.
//!
//! Job: [`AgentConfigs`] answers a [`Query`] from an in-memory snapshot of
//! the index that a background task ([`es`]) refreshes every
//! `apm-server.agent.config.cache.expiration`.
//!
//! Invariants:
//! * [`AgentConfigs::fetch`] never blocks: the snapshot is read under a lock
//!   held only to clone an `Arc`; the only I/O is the optional, async Kibana
//!   fallback ([`kibana`]), used only while the snapshot is not loaded or the
//!   Elasticsearch credentials were rejected.
//! * The snapshot is bounded ([`es::MAX_DOCS`] documents); it is replaced
//!   whole, never mutated in place.
//! * Once Elasticsearch rejects the credentials (401/403) the state is
//!   [`CacheState::Invalid`] for good and refreshing stops.
//! * Settings are string → string with keys sorted; "no config" is `{}` with
//!   etag `-`.

pub mod es;
pub mod kibana;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Etag of the "no config" result.
pub const NO_ETAG: &str = "-";

/// The only setting anonymous callers may see.
pub const ANONYMOUS_SETTING: &str = "transaction_sample_rate";

/// The service part of a query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
}

/// What an agent asks for (POST body shape; GET builds the same).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    #[serde(default)]
    pub service: Service,
    /// Always serialized (case P.138), empty when the agent sent none.
    #[serde(default)]
    pub etag: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mark_as_applied_by_agent: bool,
}

/// A matched configuration (or "no config").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub settings: BTreeMap<String, String>,
    pub etag: String,
    /// `agent_name` of the document; empty = any agent.
    pub agent_name: String,
}

impl AgentConfig {
    /// `{}` with etag `-`.
    pub fn none() -> Self {
        AgentConfig {
            settings: BTreeMap::new(),
            etag: NO_ETAG.into(),
            agent_name: String::new(),
        }
    }
}

/// One document of `.apm-agent-configuration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDoc {
    pub service_name: String,
    pub service_environment: String,
    pub config: AgentConfig,
}

/// Why a query could not be answered. Mapped to HTTP in
/// `crate::http::agentcfg` only.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Elasticsearch rejected our credentials (401/403); no fallback.
    #[error("no valid elasticsearch config to fetch agent config")]
    InvalidEsConfig,
    /// No successful refresh yet; no fallback.
    #[error("agentcfg infrastructure is not ready")]
    NotReady,
    /// Kibana answered with an error mentioning `Unauthorized`.
    #[error("Unauthorized")]
    KibanaUnauthorized,
    /// Kibana could not be reached.
    #[error("sending request to kibana failed: {0}")]
    KibanaSend(String),
    /// Kibana's response could not be read.
    #[error("unable to read Kibana response body: {0}")]
    KibanaBody(String),
    /// Anything else (e.g. a Kibana error body).
    #[error("{0}")]
    Other(String),
}

/// Where the snapshot stands.
#[derive(Clone, Debug)]
pub enum CacheState {
    /// No successful refresh yet.
    NotReady,
    /// The documents of the last successful refresh.
    Ready(Arc<Vec<ConfigDoc>>),
    /// Credentials rejected; refreshing stopped.
    Invalid,
}

/// The shared, refreshed view of agent configurations.
pub struct AgentConfigs {
    state: RwLock<CacheState>,
    fallback: Option<kibana::KibanaFetcher>,
    /// Stops the refresh task when dropped.
    stop: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl AgentConfigs {
    /// An empty view in state [`CacheState::NotReady`] (nothing refreshes it
    /// until [`es::spawn_refresher`] is given it).
    pub fn new() -> Arc<Self> {
        Self::with_fallback(None)
    }

    /// Like [`AgentConfigs::new`], with a Kibana fallback.
    pub fn with_fallback(fallback: Option<kibana::KibanaFetcher>) -> Arc<Self> {
        Arc::new(AgentConfigs {
            state: RwLock::new(CacheState::NotReady),
            fallback,
            stop: parking_lot::Mutex::new(None),
        })
    }

    pub fn has_fallback(&self) -> bool {
        self.fallback.is_some()
    }

    /// A view that is ready with `docs` (tests, static sources).
    pub fn with_docs(docs: Vec<ConfigDoc>) -> Arc<Self> {
        let s = Self::new();
        s.set(CacheState::Ready(Arc::new(docs)));
        s
    }

    pub fn set(&self, st: CacheState) {
        *self.state.write() = st;
    }

    pub fn state(&self) -> CacheState {
        self.state.read().clone()
    }

    pub(crate) fn set_stop(&self, tx: tokio::sync::oneshot::Sender<()>) {
        *self.stop.lock() = Some(tx);
    }

    /// Stops the background refresh (idempotent).
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().take() {
            let _ = tx.send(());
        }
    }

    /// Answers `q`; anonymous callers pass their `allow_agent` list as
    /// `insecure_agents`, others `None`.
    pub async fn fetch(
        &self,
        q: &Query,
        insecure_agents: Option<&[String]>,
    ) -> Result<AgentConfig, FetchError> {
        let state = self.state();
        let found = match (state, &self.fallback) {
            (CacheState::Ready(docs), _) => find(&docs, &q.service.name, &q.service.environment)
                .cloned()
                .unwrap_or_else(AgentConfig::none),
            (_, Some(kibana)) => kibana.fetch(q).await?,
            (CacheState::NotReady, None) => return Err(FetchError::NotReady),
            (CacheState::Invalid, None) => return Err(FetchError::InvalidEsConfig),
        };
        Ok(match insecure_agents {
            Some(list) => sanitize(list, found),
            None => found,
        })
    }
}

impl Drop for AgentConfigs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Matching precedence: exact name+environment; name with
/// empty environment; empty name with the environment; both empty.
pub fn find<'a>(docs: &'a [ConfigDoc], name: &str, env: &str) -> Option<&'a AgentConfig> {
    let by = |n: &str, e: &str| {
        docs.iter()
            .find(|d| d.service_name == n && d.service_environment == e)
            .map(|d| &d.config)
    };
    by(name, env)
        .or_else(|| by(name, ""))
        .or_else(|| by("", env))
        .or_else(|| by("", ""))
}

/// What an anonymous caller may see (case P.133): an empty
/// list filters nothing; a document for an agent that does not start with a
/// listed prefix becomes "no config"; otherwise only
/// `transaction_sample_rate` is kept, with the etag.
pub fn sanitize(insecure_agents: &[String], mut cfg: AgentConfig) -> AgentConfig {
    if insecure_agents.is_empty() {
        return cfg;
    }
    if !cfg.agent_name.is_empty()
        && !insecure_agents
            .iter()
            .any(|a| cfg.agent_name.starts_with(a.as_str()))
    {
        return AgentConfig::none();
    }
    cfg.settings.retain(|k, _| k == ANONYMOUS_SETTING);
    cfg
}

/// Settings values as strings: strings as is, numbers and booleans
/// rendered (case P.134), anything else as compact JSON.
pub fn setting_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(agent: &str, etag: &str, kv: &[(&str, &str)]) -> AgentConfig {
        AgentConfig {
            settings: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            etag: etag.into(),
            agent_name: agent.into(),
        }
    }

    fn doc(name: &str, env: &str, etag: &str) -> ConfigDoc {
        ConfigDoc {
            service_name: name.into(),
            service_environment: env.into(),
            config: cfg("", etag, &[("k", etag)]),
        }
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sanitize_p133() {
        let c = cfg(
            "python",
            "e",
            &[("transaction_sample_rate", "0.5"), ("capture_body", "all")],
        );
        assert_eq!(sanitize(&[], c.clone()), c);
        assert_eq!(sanitize(&list(&["rum-js"]), c.clone()), AgentConfig::none());
        let rum = AgentConfig {
            agent_name: "rum-js".into(),
            ..c.clone()
        };
        let s = sanitize(&list(&["rum-js"]), rum);
        assert_eq!(s.etag, "e");
        assert_eq!(
            s.settings.keys().collect::<Vec<_>>(),
            vec!["transaction_sample_rate"]
        );
        let jp = AgentConfig {
            agent_name: "Jaeger/Python".into(),
            ..c.clone()
        };
        assert_eq!(sanitize(&list(&["Jaeger"]), jp.clone()).settings.len(), 1);
        assert_eq!(sanitize(&list(&["Python"]), jp), AgentConfig::none());
        // A document for any agent is filtered, not dropped.
        let any = AgentConfig {
            agent_name: String::new(),
            ..c
        };
        assert_eq!(sanitize(&list(&["rum-js"]), any).settings.len(), 1);
    }

    #[test]
    fn precedence() {
        let all = vec![
            doc("", "", "both-empty"),
            doc("", "prod", "env-only"),
            doc("svc", "", "name-only"),
            doc("svc", "prod", "exact"),
        ];
        assert_eq!(find(&all, "svc", "prod").unwrap().etag, "exact");
        assert_eq!(find(&all, "svc", "dev").unwrap().etag, "name-only");
        assert_eq!(find(&all, "other", "prod").unwrap().etag, "env-only");
        assert_eq!(find(&all, "other", "dev").unwrap().etag, "both-empty");
        assert!(find(&all[2..], "other", "dev").is_none());
    }

    #[test]
    fn fetch_states_p136() {
        let c = AgentConfigs::new();
        let q = Query {
            service: Service {
                name: "first".into(),
                environment: String::new(),
            },
            ..Default::default()
        };
        let fetch = |c: &AgentConfigs| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(c.fetch(&q, None))
        };
        assert_eq!(fetch(&c), Err(FetchError::NotReady));
        c.set(CacheState::Ready(Arc::new(vec![doc("first", "", "1")])));
        assert_eq!(fetch(&c).unwrap().etag, "1");
        c.set(CacheState::Invalid);
        assert_eq!(fetch(&c), Err(FetchError::InvalidEsConfig));
    }

    #[test]
    fn query_round_trip_p138() {
        let q: Query = serde_json::from_str(
            r#"{"service":{"name":"auth-service","environment":"production"},"mark_as_applied_by_agent":true,"unknown":1}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&q).unwrap(),
            r#"{"service":{"name":"auth-service","environment":"production"},"etag":"","mark_as_applied_by_agent":true}"#
        );
    }

    #[test]
    fn setting_values_p134() {
        assert_eq!(setting_string(&serde_json::json!(0.3)), "0.3");
        assert_eq!(setting_string(&serde_json::json!("x")), "x");
        assert_eq!(setting_string(&serde_json::json!(true)), "true");
    }
}
