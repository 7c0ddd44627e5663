//! Access to the real Elasticsearch-compatible engine of issue 12 (an
//! OpenSearch 2.19 node started by `.ci/engine.sh`, see engine/README.md).
//! Tests find it through `APM_RS_ENGINE_URL`; without it they print a loud
//! SKIPPED line, except under `CI=true`, where a missing engine fails.
//!
//! `install` puts apm-data's templates and pipelines (`apm_data.rs`) in the
//! engine; `reset` deletes our data streams between tests; `documents`
//! reads every document back in Elasticsearch's `fields` form.
#![allow(dead_code)]

pub mod apm_data;

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Dotted leaf name → values, as a `fields: ["*"]` search returns them.
pub type Fields = BTreeMap<String, Vec<Value>>;

/// The data streams our documents go to.
pub const DATA_STREAMS: &str = "traces-apm*,logs-apm*,metrics-apm*";

pub struct Engine {
    pub url: String,
    client: reqwest::Client,
    installed: std::sync::atomic::AtomicBool,
}

/// The engine named by `APM_RS_ENGINE_URL`, or `None` after a loud SKIPPED
/// line. Panics under `CI=true` when the variable is missing: CI starts the
/// engine (`.ci/engine.sh`), so its absence there is a failure.
pub fn from_env(test: &str) -> Option<Engine> {
    match std::env::var("APM_RS_ENGINE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(Engine::new(url.trim())),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: APM_RS_ENGINE_URL is not set under CI=true; .ci/run must start \
                 the engine (.ci/engine.sh spawn / wait)"
            );
            // Straight to stderr: the harness captures eprintln! of passing tests.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: no real engine (start one with \
                 `APM_RS_ENGINE_URL=$(.ci/engine.sh start)`) ***\n"
            );
            None
        }
    }
}

/// Serialises the tests of one binary that share the engine.
pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

impl Engine {
    pub fn new(url: &str) -> Self {
        Engine {
            url: url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            installed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `host:port` for `output.elasticsearch.hosts`.
    pub fn host(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned()
    }

    /// One request; `(status, body as JSON or as a string)`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.client.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("engine {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// Like `call`, panicking on a non-2xx answer.
    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&s), "engine {method} {path}: {s} {v}");
        v
    }

    /// Installs the templates and pipelines of `apm_data.rs` (idempotent).
    pub async fn install(&self) {
        use reqwest::Method;
        for (family, pattern) in apm_data::FAMILIES {
            self.ok(
                Method::PUT,
                &format!("/_ingest/pipeline/{}", apm_data::pipeline_name(family)),
                Some(apm_data::pipeline(family)),
            )
            .await;
            self.ok(
                Method::PUT,
                &format!("/_index_template/{family}-apm-engine"),
                Some(apm_data::index_template(family, pattern)),
            )
            .await;
        }
    }

    /// Deletes our data streams and `.apm-source-map`; installs the
    /// templates and pipelines on first use (from then on they stay).
    pub async fn reset(&self) {
        use reqwest::Method;
        let (s, v) = self
            .call(
                Method::DELETE,
                &format!("/_data_stream/{DATA_STREAMS}"),
                None,
            )
            .await;
        assert!(s == 200 || s == 404, "deleting data streams: {s} {v}");
        let (s, v) = self
            .call(
                Method::DELETE,
                "/.apm-source-map?ignore_unavailable=true",
                None,
            )
            .await;
        assert!(s == 200 || s == 404, "deleting .apm-source-map: {s} {v}");
        if !self
            .installed
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.install().await;
        }
    }

    pub async fn refresh(&self) {
        self.ok(
            reqwest::Method::POST,
            &format!("/{DATA_STREAMS}/_refresh?ignore_unavailable=true&allow_no_indices=true"),
            None,
        )
        .await;
    }

    /// Documents in our data streams.
    pub async fn count(&self) -> u64 {
        self.refresh().await;
        let v = self
            .ok(
                reqwest::Method::GET,
                &format!("/{DATA_STREAMS}/_count?ignore_unavailable=true&allow_no_indices=true"),
                None,
            )
            .await;
        v["count"].as_u64().expect("count")
    }

    /// Names of our data streams.
    pub async fn data_streams(&self) -> Vec<String> {
        let v = self
            .ok(
                reqwest::Method::GET,
                &format!("/_data_stream/{DATA_STREAMS}"),
                None,
            )
            .await;
        let mut names: Vec<String> = v["data_streams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every document of our data streams: (data stream, `fields` view,
    /// `_source`). At most 10,000 (the tests write far fewer).
    pub async fn documents(&self) -> Vec<(String, Fields, Value)> {
        self.refresh().await;
        let v = self
            .ok(
                reqwest::Method::POST,
                &format!("/{DATA_STREAMS}/_search?ignore_unavailable=true&allow_no_indices=true"),
                Some(json!({"size": 10000, "fields": ["*"], "_source": true,
                    "query": {"match_all": {}}})),
            )
            .await;
        let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
        hits.iter()
            .map(|h| {
                let backing = h["_index"].as_str().unwrap_or_default();
                let source = h["_source"].clone();
                (
                    data_stream_of(backing),
                    fields_of(&h["fields"], &source),
                    source,
                )
            })
            .collect()
    }

    /// Rejections counted by the engine's write thread pool (real 429s).
    pub async fn write_rejections(&self) -> u64 {
        let v = self
            .ok(reqwest::Method::GET, "/_nodes/stats/thread_pool", None)
            .await;
        v["nodes"]
            .as_object()
            .map(|nodes| {
                nodes
                    .values()
                    .filter_map(|n| n["thread_pool"]["write"]["rejected"].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// `.ds-traces-apm-default-000001` → `traces-apm-default`.
pub fn data_stream_of(backing: &str) -> String {
    let s = backing.strip_prefix(".ds-").unwrap_or(backing);
    match s.rsplit_once('-') {
        Some((name, gen)) if gen.len() == 6 && gen.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_owned()
        }
        _ => s.to_owned(),
    }
}

/// The `fields` of a hit, plus the two things OpenSearch cannot return in
/// Elasticsearch's form (see `apm_data.rs`): `flattened` headers and
/// histogram / summary metric samples, taken from `_source`.
pub fn fields_of(fields: &Value, source: &Value) -> Fields {
    let mut out: Fields = fields
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| match v {
                    Value::Array(a) => (k.clone(), a.clone()),
                    other => (k.clone(), vec![other.clone()]),
                })
                .collect()
        })
        .unwrap_or_default();
    // flattened: the whole object as one value, one-element arrays collapsed.
    for path in apm_data::FLATTENED {
        if let Some(Value::Object(o)) = lookup(source, path) {
            let m = crate::emulate::flattened_value(o);
            if !m.is_empty() {
                out.insert((*path).to_owned(), vec![Value::Object(m)]);
            }
        }
    }
    // histogram {counts, values} and summary {value_count, sum}: one value.
    for (a, b) in [("counts", "values"), ("value_count", "sum")] {
        let bases: Vec<String> = out
            .keys()
            .filter_map(|k| k.strip_suffix(&format!(".{a}")).map(str::to_owned))
            .filter(|base| out.contains_key(&format!("{base}.{b}")))
            .collect();
        for base in bases {
            if let Some(Value::Object(o)) = lookup(source, &base) {
                if o.len() == 2 && o.contains_key(a) && o.contains_key(b) {
                    out.remove(&format!("{base}.{a}"));
                    out.remove(&format!("{base}.{b}"));
                    out.insert(base, vec![Value::Object(o.clone())]);
                }
            }
        }
    }
    out
}

/// Dotted-path lookup that also finds literal dotted keys.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    if let Some(x) = o.get(path) {
        return Some(x);
    }
    path.match_indices('.')
        .find_map(|(i, _)| o.get(&path[..i]).and_then(|h| lookup(h, &path[i + 1..])))
}
