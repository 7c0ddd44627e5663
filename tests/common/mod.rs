//! Shared test support: an in-process apm-rs on an ephemeral port with a
//! file sink in a temporary directory, corpus lookup, and HTTP helpers.
#![allow(dead_code)]

pub mod brokers;
pub mod gate;
pub mod identity;

use apm_rs::config::{self, Config};
use apm_rs::output::OutputFactory;
use apm_rs::pipeline::PipelineHooks;
use apm_rs::server::{RunningServer, ServerBuilder};
use std::path::PathBuf;
use std::sync::Arc;

/// The upstream corpus (`$APM_CORPUS` or `../shared/corpus`), or `None` after
/// printing a loud SKIPPED line naming the test.
pub fn corpus(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("APM_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    if p.join("intake-v2").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "\n*** SKIPPED {test}: corpus not found at {} (set APM_CORPUS) ***\n",
            p.display()
        );
        None
    }
}

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub url: String,
    pub dir: tempfile::TempDir,
}

/// Overrides that point the Elasticsearch output at `host` with quick
/// flushes (50 ms) and backoff (50 ms .. 500 ms), then `extra` (later wins).
pub fn es_output_overrides(host: &str, extra: &[&str]) -> Vec<String> {
    let mut o = vec![
        format!("output.elasticsearch.hosts=[\"{host}\"]"),
        "output.elasticsearch.flush_interval=50ms".to_string(),
        "output.elasticsearch.backoff.init=50ms".to_string(),
        "output.elasticsearch.backoff.max=500ms".to_string(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

/// A test server whose output is the Elasticsearch at `host`
/// ([`es_output_overrides`]).
pub fn start_with_es(host: &str, extra: &[&str]) -> TestServer {
    let o = es_output_overrides(host, extra);
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    TestServer::start(&refs)
}

pub fn test_config(overrides: &[&str]) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ov: Vec<String> = vec![
        "apm-server.host=127.0.0.1:0".into(),
        format!("output.file.path={}", dir.path().display()),
        "apm-server.shutdown_timeout=10s".into(),
        // Poison events go to the server's temporary directory (in a
        // folder of its own, which the sink readers skip), not to ./data.
        format!(
            "queue.dead_letter.path={}",
            dir.path()
                .join("dead_letter")
                .join("dead_letter.ndjson")
                .display()
        ),
    ];
    ov.extend(overrides.iter().map(|s| s.to_string()));
    (config::from_overrides(ov).expect("test config"), dir)
}

impl TestServer {
    pub fn start(overrides: &[&str]) -> Self {
        Self::start_with(overrides, None, PipelineHooks::default())
    }

    pub fn start_with(
        overrides: &[&str],
        output: Option<Arc<dyn OutputFactory>>,
        hooks: PipelineHooks,
    ) -> Self {
        let (cfg, dir) = test_config(overrides);
        let mut b = ServerBuilder::new(cfg).hooks(hooks);
        if let Some(o) = output {
            b = b.output(o);
        }
        let server = b.spawn().expect("server starts");
        let url = format!("http://{}", server.addr);
        TestServer {
            server: Some(server),
            url,
            dir,
        }
    }

    pub fn telemetry(&self) -> &apm_rs::telemetry::Telemetry {
        &self.server.as_ref().expect("running").telemetry
    }

    /// Graceful shutdown (drains the pipeline, flushes the sink).
    pub async fn shutdown(&mut self) -> bool {
        let s = self.server.take().expect("running");
        tokio::task::spawn_blocking(move || s.shutdown())
            .await
            .expect("shutdown thread")
    }

    /// The lines of the dead-letter file (`queue.dead_letter.path` as set
    /// by [`test_config`]), parsed.
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        let path = self
            .dir
            .path()
            .join("dead_letter")
            .join("dead_letter.ndjson");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("dead letter is JSON"))
            .collect()
    }

    /// Every (index, document) from intake events written to the file sink
    /// so far (aggregated metrics left out: see [`TestServer::all_docs`]).
    pub fn docs(&self) -> Vec<(String, serde_json::Value)> {
        read_sink(self.dir.path())
    }

    /// Every (index, document) written to the file sink so far, including
    /// the server's aggregated metrics.
    pub fn all_docs(&self) -> Vec<(String, serde_json::Value)> {
        read_sink_all(self.dir.path())
    }
}

/// The (index, document) pairs of intake events in the file sink under `dir`.
pub fn read_sink(dir: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let mut docs = read_sink_all(dir);
    docs.retain(|(index, _)| !is_aggregated_index(index));
    docs
}

/// Every (index, document) pair in the file sink under `dir`.
pub fn read_sink_all(dir: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let mut lines = text.lines();
        while let (Some(action), Some(doc)) = (lines.next(), lines.next()) {
            let a: serde_json::Value = serde_json::from_str(action).expect("action line is JSON");
            let index = a["create"]["_index"]
                .as_str()
                .expect("create action")
                .to_string();
            out.push((index, serde_json::from_str(doc).expect("document is JSON")));
        }
    }
    out
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
    pub fn accepted(&self) -> u64 {
        self.json()["accepted"].as_u64().expect("accepted count")
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client")
}

pub async fn send(
    method: reqwest::Method,
    url: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut rb = client().request(method, url).body(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    send(reqwest::Method::POST, url, body, headers).await
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

/// A minimal valid v2 payload: metadata and `n` error events.
pub fn errors_payload(n: usize, service: &str, agent: &str) -> Vec<u8> {
    let mut s = format!(
        "{{\"metadata\":{{\"service\":{{\"name\":\"{service}\",\"agent\":{{\"name\":\"{agent}\",\"version\":\"1.0.0\"}}}}}}}}\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "{{\"error\":{{\"id\":\"{:016x}\",\"exception\":{{\"message\":\"boom {i}\",\"type\":\"Err\"}}}}}}\n",
            i + 1
        ));
    }
    s.into_bytes()
}

/// Is `index` a data stream of the server's aggregated metrics
/// (`metrics-apm.transaction.1m-default`, …)?
pub fn is_aggregated_index(index: &str) -> bool {
    [
        "transaction",
        "service_transaction",
        "service_summary",
        "service_destination",
    ]
    .iter()
    .any(|m| {
        index
            .strip_prefix("metrics-apm.")
            .and_then(|r| r.strip_prefix(m))
            .is_some_and(|r| r.starts_with('.'))
    })
}

/// Documents in the Elasticsearch double that came from intake events (not
/// the server's aggregated metrics, which appear when an interval ends and
/// at shutdown).
pub fn event_docs(es: &es_double::EsDouble) -> u64 {
    es.indices()
        .iter()
        .filter(|i| !is_aggregated_index(i))
        .map(|i| es.docs(i).len() as u64)
        .sum()
}
