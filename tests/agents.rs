//! Elastic's published agents against the real server, with the
//! Elasticsearch double as output: Python `elastic-apm`, Node.js
//! `elastic-apm-node` and the browser agent `@elastic/apm-rum` in headless
//! Chromium (page served from another origin, so CORS is real). The programs
//! live in `agents/`; `.ci/agents.sh` installs the pinned agents.
//!
//! A run fails when the agent reports a problem (its logged warnings and
//! errors, non-2xx answers, browser console warnings: the programs print them
//! as `AGENT-PROBLEM` lines and exit non-zero) or when the expected documents
//! are not in the double under the right data streams with the right service
//! name. The negative tests prove both detections fire.
//!
//! Where the agents are: `$APM_RS_AGENTS_DIR` (default
//! `$HOME/.cache/apm-rs/agents`), the browser `$APM_RS_CHROMIUM` (default
//! `/usr/bin/chromium`), Node.js `$APM_RS_NODE` (default `node`). Without
//! them the tests print `*** SKIPPED ***`, unless `CI=true`: then they fail.

mod common;
use base64::Engine;
use common::*;
use es_double::{ApiKeyAnswer, EsDouble};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "agents-s3cret-token";
const AGENT_TIMEOUT: Duration = Duration::from_secs(90);
const DOCS_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- locating

struct Agents {
    dir: PathBuf,
    repo: PathBuf,
    node: String,
    chromium: PathBuf,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The installed agents, or `None` after a loud SKIPPED line (a failure on CI).
fn agents(test: &str) -> Option<Agents> {
    let dir = std::env::var_os("APM_RS_AGENTS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/apm-rs/agents")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    let a = Agents {
        dir,
        repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agents"),
        node: std::env::var("APM_RS_NODE").unwrap_or_else(|_| "node".into()),
        chromium: std::env::var_os("APM_RS_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
    };
    let mut missing: Vec<String> = [
        a.python(),
        a.dir
            .join("node/node_modules/elastic-apm-node/package.json"),
        a.rum_bundle(),
        a.dir.join("rum/node_modules/playwright-core/package.json"),
        a.chromium.clone(),
    ]
    .into_iter()
    .filter(|p| !p.exists())
    .map(|p| p.display().to_string())
    .collect();
    let node_ok = Command::new(&a.node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        missing.push(format!("Node.js ({})", a.node));
    }
    if missing.is_empty() {
        return Some(a);
    }
    let msg = format!(
        "agents not installed (run .ci/agents.sh); missing: {}",
        missing.join(", ")
    );
    if ci() {
        panic!("{test}: {msg} (CI=true: agents are required)");
    }
    // straight to the process's stderr, past the test harness's capture
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    None
}

impl Agents {
    fn python(&self) -> PathBuf {
        self.dir.join("venv/bin/python")
    }
    fn rum_bundle(&self) -> PathBuf {
        self.dir
            .join("rum/node_modules/@elastic/apm-rum/dist/bundles/elastic-apm-rum.umd.min.js")
    }

    fn command(&self, kind: Kind) -> Command {
        match kind {
            Kind::Python => {
                let mut c = Command::new(self.python());
                c.arg(self.repo.join("python/app.py"));
                c
            }
            Kind::Node => {
                let mut c = Command::new(&self.node);
                c.arg(self.repo.join("node/app.js"))
                    .env("NODE_PATH", self.dir.join("node/node_modules"));
                c
            }
            Kind::Rum(v) => {
                let mut c = Command::new(&self.node);
                c.arg(self.repo.join("rum/run.js"))
                    .env("NODE_PATH", self.dir.join("rum/node_modules"))
                    .env("API_VERSION", v.to_string())
                    .env("RUM_BUNDLE", self.rum_bundle())
                    .env("CHROMIUM", &self.chromium);
                c
            }
        }
    }
}

// ---------------------------------------------------------------- running

#[derive(Clone, Copy, Debug)]
enum Kind {
    Python,
    Node,
    /// The RUM agent with this `apiVersion`.
    Rum(u8),
}

enum Credentials<'a> {
    None,
    Token(&'a str),
    /// `id:key`, base64-encoded for the agent.
    ApiKey(&'a str, &'a str),
}

struct Outcome {
    success: bool,
    output: String,
}

impl Outcome {
    /// The `AGENT-PROBLEM` lines the program printed.
    fn problems(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.starts_with("AGENT-PROBLEM"))
            .collect()
    }

    /// Clean: exit status 0, no problem reported, and the program got to its end.
    fn assert_clean(&self, what: &str) {
        assert!(
            self.success && self.problems().is_empty() && self.output.contains("AGENT-OK"),
            "{what}: the agent reported problems:\n{}",
            self.output
        );
    }
}

/// Runs one agent program against `apm_url` and waits (bounded) for it to end.
async fn run_agent(
    a: &Agents,
    kind: Kind,
    apm_url: &str,
    service: &str,
    creds: Credentials<'_>,
) -> Outcome {
    let out = tempfile::tempdir().expect("tempdir");
    let log = out.path().join("agent.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut c = a.command(kind);
    c.env("APM_URL", apm_url)
        .env("SERVICE_NAME", service)
        .env_remove("SECRET_TOKEN")
        .env_remove("API_KEY")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    // the agents read ELASTIC_APM_* settings from the environment: none leak in
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ELASTIC_APM_") {
            c.env_remove(k);
        }
    }
    match creds {
        Credentials::None => {}
        Credentials::Token(t) => {
            c.env("SECRET_TOKEN", t);
        }
        Credentials::ApiKey(id, key) => {
            c.env(
                "API_KEY",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}")),
            );
        }
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {kind:?} agent: {e}"));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for agent") {
            break Some(s);
        }
        if t.elapsed() > AGENT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut output = std::fs::read_to_string(&log).unwrap_or_default();
    if status.is_none() {
        output.push_str(&format!(
            "\nAGENT-PROBLEM timed out after {AGENT_TIMEOUT:?}\n"
        ));
    }
    eprintln!(
        "--- {kind:?} agent ({service}) finished in {:.1}s: {:?}\n{output}---",
        t.elapsed().as_secs_f64(),
        status
    );
    Outcome {
        success: status.is_some_and(|s| s.success()),
        output,
    }
}

// ---------------------------------------------------------------- the server

fn start_server(es: &EsDouble, extra: &[&str]) -> TestServer {
    let mut o = vec![
        format!("output.elasticsearch.hosts=[\"{}\"]", es.host()),
        "output.elasticsearch.flush_interval=50ms".to_string(),
        // the RUM agent's page is on http://localhost:<port>, the server on 127.0.0.1
        "apm-server.rum.allow_origins=[\"http://localhost:*\"]".to_string(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    TestServer::start(&refs)
}

fn token_server(es: &EsDouble) -> TestServer {
    start_server(es, &[&format!("apm-server.auth.secret_token={TOKEN}")])
}

/// API keys verified by the double; `agents:s3cret` may write events and read agent config.
fn api_key_server(es: &EsDouble) -> TestServer {
    es.set_api_key(
        "agents",
        "s3cret",
        ApiKeyAnswer::granted("agents-user", &["event:write", "config_agent:read"]),
    );
    start_server(
        es,
        &[
            "apm-server.auth.api_key.enabled=true",
            &format!(
                "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
                es.url()
            ),
        ],
    )
}

fn rum_server(es: &EsDouble, extra: &[&str]) -> TestServer {
    let mut o = vec!["apm-server.rum.enabled=true"];
    o.extend_from_slice(extra);
    start_server(es, &o)
}

// ---------------------------------------------------------------- expectations

/// What one run of an agent program must leave in the double.
struct Expect<'a> {
    service: &'a str,
    agent: &'a str,
    traces: &'a str,
    /// (transaction name, type, how many)
    transactions: &'a [(&'a str, &'a str, usize)],
    spans: &'a [&'a str],
    /// A metric of the program's own, in `metrics-apm.app.<service>-default`.
    custom_metric: Option<(&'a str, f64)>,
    /// Labels every transaction of `labelled_type` carries.
    labelled_type: &'a str,
    /// `metricset.name` of the breakdown metricsets.
    breakdown_name: Option<&'a str>,
}

fn backend(service: &'static str, agent: &'static str) -> Expect<'static> {
    Expect {
        service,
        agent,
        traces: "traces-apm-default",
        transactions: &[("GET /hello", "request", 2)],
        spans: &["SELECT FROM orders", "compute"],
        custom_metric: Some(("apmrs_test.queue_depth", 42.0)),
        labelled_type: "request",
        breakdown_name: Some("span_breakdown"),
    }
}

fn rum(service: &'static str, api_version: u8) -> Expect<'static> {
    Expect {
        service,
        agent: "rum-js",
        traces: "traces-apm.rum-default",
        transactions: &[("checkout", "custom", 1)],
        spans: &["compute basket", "render"],
        custom_metric: None,
        labelled_type: "custom",
        breakdown_name: (api_version == 2).then_some("span_breakdown"),
    }
}

fn all_docs(es: &EsDouble) -> Vec<(String, Value)> {
    let mut indices = es.indices();
    indices.sort();
    indices
        .into_iter()
        .flat_map(|i| es.docs(&i).into_iter().map(move |d| (i.clone(), d)))
        .collect()
}

fn has_sample(doc: &Value, name: &str, value: f64) -> bool {
    let in_samples = doc["metricset"]["samples"].as_array().is_some_and(|s| {
        s.iter()
            .any(|x| x["name"] == name && x["value"].as_f64() == Some(value))
    });
    in_samples || doc.get(name).and_then(Value::as_f64) == Some(value)
}

/// Everything `e` expects that the double does not hold (empty: complete).
fn missing(es: &EsDouble, e: &Expect) -> Vec<String> {
    let docs = all_docs(es);
    let mut m = Vec::new();
    for (index, d) in &docs {
        if d["service"]["name"] != e.service {
            m.push(format!(
                "{index}: a document of service {}",
                d["service"]["name"]
            ));
        }
        if d["agent"]["name"] != e.agent {
            m.push(format!(
                "{index}: a document of agent {}",
                d["agent"]["name"]
            ));
        }
        let ds = &d["data_stream"];
        let named = format!(
            "{}-{}-{}",
            ds["type"].as_str().unwrap_or("?"),
            ds["dataset"].as_str().unwrap_or("?"),
            ds["namespace"].as_str().unwrap_or("?")
        );
        if &named != index {
            m.push(format!("a document in {index} names data stream {named}"));
        }
    }
    let of = |index: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|(i, d)| i == index && d["service"]["name"] == e.service)
            .map(|(_, d)| d)
            .collect()
    };
    let traces = of(e.traces);
    let txs: Vec<&Value> = traces
        .iter()
        .copied()
        // v2 transactions repeat their id as `span.id`; spans have a `span.name`
        .filter(|d| d["transaction"]["name"].is_string() && d["span"]["name"].is_null())
        .collect();
    for (name, ty, n) in e.transactions {
        let got: Vec<_> = txs
            .iter()
            .filter(|d| d["transaction"]["name"] == *name && d["transaction"]["type"] == *ty)
            .collect();
        if got.len() != *n {
            m.push(format!(
                "{}: {n} transaction(s) {name:?} of type {ty}, found {}",
                e.traces,
                got.len()
            ));
        }
    }
    for d in &txs {
        if d["transaction"]["type"] == e.labelled_type && d["labels"]["run"] != "agents-test" {
            m.push(format!(
                "{}: transaction without label run=agents-test: {}",
                e.traces, d["labels"]
            ));
        }
    }
    if e.agent == "rum-js" && !txs.iter().any(|d| d["transaction"]["type"] == "page-load") {
        m.push(format!("{}: no page-load transaction", e.traces));
    }
    for span in e.spans {
        if !traces.iter().any(|d| d["span"]["name"] == *span) {
            m.push(format!("{}: no span {span:?}", e.traces));
        }
    }
    let errors = of("logs-apm.error-default");
    let boom = errors.iter().any(|d| {
        d["error"]["exception"][0]["message"]
            .as_str()
            .is_some_and(|s| s.contains("agents-test boom"))
    });
    if !boom {
        m.push("logs-apm.error-default: no error \"agents-test boom\"".into());
    }
    // breakdown metricsets; v3 ones have no metricset.name (an upstream decoder oddity)
    let breakdown = of("metrics-apm.internal-default").into_iter().any(|d| {
        d["span"]["self_time"]["count"].is_u64()
            && d["transaction"]["name"].is_string()
            && d["metricset"].get("name").and_then(Value::as_str) == e.breakdown_name
    });
    if !breakdown {
        m.push(format!(
            "metrics-apm.internal-default: no breakdown metricset named {:?}",
            e.breakdown_name
        ));
    }
    if let Some((name, value)) = e.custom_metric {
        let index = format!("metrics-apm.app.{}-default", e.service.replace('-', "_"));
        if !of(&index).iter().any(|d| has_sample(d, name, value)) {
            m.push(format!("{index}: no metric {name} = {value}"));
        }
    }
    m
}

/// Waits (bounded) until the double holds everything `e` expects; panics with what is missing.
async fn assert_complete(es: &EsDouble, e: &Expect<'_>) {
    let t = Instant::now();
    loop {
        let m = missing(es, e);
        if m.is_empty() {
            return;
        }
        if t.elapsed() > DOCS_TIMEOUT {
            let mut indices = es.indices();
            indices.sort();
            panic!(
                "{}: documents missing after {DOCS_TIMEOUT:?}:\n  {}\nindices: {indices:?}",
                e.service,
                m.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- backend agents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_with_secret_token() {
    let Some(a) = agents("python_agent_with_secret_token") else {
        return;
    };
    let es = EsDouble::start();
    let srv = token_server(&es);
    let e = backend("py-token", "python");
    run_agent(
        &a,
        Kind::Python,
        &srv.url,
        e.service,
        Credentials::Token(TOKEN),
    )
    .await
    .assert_clean("python, secret token");
    assert_complete(&es, &e).await;
    // the completeness check itself can fail: the same documents do not
    // satisfy another service's expectations ...
    let other = backend("py-other", "python");
    let m = missing(&es, &other);
    assert!(
        m.iter().any(|x| x.contains("a document of service"))
            && m.iter().any(|x| x.contains("metrics-apm.app.py_other")),
        "{m:?}"
    );
    // ... nor do they once the traces sit in another data stream
    let moved = EsDouble::start();
    for (i, (index, doc)) in all_docs(&es).into_iter().enumerate() {
        let index = index.replace("traces-apm-default", "traces-apm.rum-default");
        moved.put_doc(&index, &i.to_string(), doc);
    }
    let m = missing(&moved, &e);
    assert!(
        m.iter()
            .any(|x| x.contains("names data stream traces-apm-default"))
            && m.iter()
                .any(|x| x.contains("traces-apm-default: 2 transaction(s)")),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_with_api_key() {
    let Some(a) = agents("python_agent_with_api_key") else {
        return;
    };
    let es = EsDouble::start();
    let srv = api_key_server(&es);
    let e = backend("py-apikey", "python");
    run_agent(
        &a,
        Kind::Python,
        &srv.url,
        e.service,
        Credentials::ApiKey("agents", "s3cret"),
    )
    .await
    .assert_clean("python, API key");
    assert_complete(&es, &e).await;
    assert!(
        es.has_privileges_calls() >= 1,
        "the key was verified by Elasticsearch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_with_secret_token() {
    let Some(a) = agents("node_agent_with_secret_token") else {
        return;
    };
    let es = EsDouble::start();
    let srv = token_server(&es);
    let e = backend("node-token", "nodejs");
    run_agent(
        &a,
        Kind::Node,
        &srv.url,
        e.service,
        Credentials::Token(TOKEN),
    )
    .await
    .assert_clean("node, secret token");
    assert_complete(&es, &e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agent_with_api_key() {
    let Some(a) = agents("node_agent_with_api_key") else {
        return;
    };
    let es = EsDouble::start();
    let srv = api_key_server(&es);
    let e = backend("node-apikey", "nodejs");
    run_agent(
        &a,
        Kind::Node,
        &srv.url,
        e.service,
        Credentials::ApiKey("agents", "s3cret"),
    )
    .await
    .assert_clean("node, API key");
    assert_complete(&es, &e).await;
    assert!(
        es.has_privileges_calls() >= 1,
        "the key was verified by Elasticsearch"
    );
}

// ---------------------------------------------------------------- RUM

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rum_agent_api_version_2() {
    let Some(a) = agents("rum_agent_api_version_2") else {
        return;
    };
    let es = EsDouble::start();
    // anonymous RUM next to a secret token: the browser sends no credentials
    let srv = rum_server(&es, &[&format!("apm-server.auth.secret_token={TOKEN}")]);
    let e = rum("rum-v2", 2);
    let out = run_agent(&a, Kind::Rum(2), &srv.url, e.service, Credentials::None).await;
    out.assert_clean("rum, apiVersion 2");
    assert!(
        out.output.contains("POST /intake/v2/rum/events -> 202"),
        "{}",
        out.output
    );
    assert_complete(&es, &e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rum_agent_api_version_3() {
    let Some(a) = agents("rum_agent_api_version_3") else {
        return;
    };
    let es = EsDouble::start();
    let srv = rum_server(&es, &[]);
    let e = rum("rum-v3", 3);
    let out = run_agent(&a, Kind::Rum(3), &srv.url, e.service, Credentials::None).await;
    out.assert_clean("rum, apiVersion 3");
    assert!(
        out.output.contains("POST /intake/v3/rum/events -> 202"),
        "{}",
        out.output
    );
    assert_complete(&es, &e).await;
}

// ---------------------------------------------------------------- detection fires

fn assert_detected(out: &Outcome, what: &str, needle: &str) {
    assert!(
        !out.success,
        "{what}: the program should have failed:\n{}",
        out.output
    );
    assert!(
        out.problems().iter().any(|l| l.contains(needle)),
        "{what}: no AGENT-PROBLEM line mentions {needle:?}:\n{}",
        out.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_token_is_detected_from_the_python_agents_log() {
    let Some(a) = agents("wrong_secret_token_is_detected_from_the_python_agents_log") else {
        return;
    };
    let es = EsDouble::start();
    let srv = token_server(&es);
    let out = run_agent(
        &a,
        Kind::Python,
        &srv.url,
        "py-wrong",
        Credentials::Token("not-the-token"),
    )
    .await;
    assert_detected(&out, "python, wrong token", "401");
    assert!(!missing(&es, &backend("py-wrong", "python")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_api_key_is_detected_from_the_node_agents_log() {
    let Some(a) = agents("unknown_api_key_is_detected_from_the_node_agents_log") else {
        return;
    };
    let es = EsDouble::start();
    let srv = api_key_server(&es);
    let out = run_agent(
        &a,
        Kind::Node,
        &srv.url,
        "node-wrong",
        Credentials::ApiKey("agents", "guess"),
    )
    .await;
    assert_detected(&out, "node, unknown API key", "401");
    assert!(!missing(&es, &backend("node-wrong", "nodejs")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_refusal_is_detected_in_the_browser() {
    let Some(a) = agents("cors_refusal_is_detected_in_the_browser") else {
        return;
    };
    let es = EsDouble::start();
    let srv = rum_server(
        &es,
        &["apm-server.rum.allow_origins=[\"https://elsewhere.example\"]"],
    );
    let out = run_agent(&a, Kind::Rum(2), &srv.url, "rum-cors", Credentials::None).await;
    assert_detected(&out, "rum, origin not allowed", "CORS");
    assert!(!missing(&es, &rum("rum-cors", 2)).is_empty());
}
