//! The real OpenTelemetry Python SDK (its OTLP/HTTP protobuf and OTLP/gRPC
//! exporters, pinned in agents/otel-python) and Node.js SDK (OTLP/HTTP
//! protobuf, pinned in agents/otel-node), installed by .ci/agents.sh,
//! against the real server: traces with an exception event, metrics and logs
//! sent with a secret token arrive as documents in their data streams; a
//! wrong token is refused.
//! Without the installed SDK the tests print SKIPPED (and fail on CI).

mod common;

use common::TestServer;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "otel-s3cr3t";

/// `relative` under the agents directory (`$APM_RS_AGENTS_DIR`, else
/// `~/.cache/apm-rs/agents`, where `.ci/agents.sh` installs), or SKIPPED
/// (a failure on CI).
fn installed(relative: &str, sdk: &str, test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("APM_RS_AGENTS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/apm-rs/agents")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    let path = dir.join(relative);
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "OpenTelemetry {sdk} SDK not installed at {} (run .ci/agents.sh)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
        panic!("{test}: {msg} (CI=true: the SDK is required)");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    None
}

fn python(test: &str) -> Option<PathBuf> {
    installed("otel-python/bin/python", "Python", test)
}

/// Which of the SDK's OTLP exporters sends.
#[derive(Clone, Copy)]
enum Exporter {
    Http,
    Grpc,
}

/// A server with the secret token (and, for gRPC, the gRPC listener) and
/// the endpoint the exporter is pointed at.
fn server(exporter: Exporter) -> (TestServer, String) {
    let token = format!("apm-server.auth.secret_token={TOKEN}");
    match exporter {
        Exporter::Http => {
            let s = TestServer::start(&[&token]);
            let url = s.url.clone();
            (s, url)
        }
        Exporter::Grpc => {
            let s = TestServer::start(&[&token, "apm-server.otlp.grpc.host=127.0.0.1:0"]);
            let addr = s.server.as_ref().and_then(|r| r.grpc_addr).expect("grpc");
            (s, format!("http://{addr}"))
        }
    }
}

/// Runs the SDK script; its stdout (one result line per signal).
async fn run_sdk(py: PathBuf, exporter: Exporter, url: &str, token: &str, service: &str) -> String {
    let mut cmd = Command::new(py);
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agents/otel-python/app.py"));
    if let Exporter::Grpc = exporter {
        cmd.arg("--grpc");
    }
    run_script(cmd, url, token, service).await
}

/// Runs an SDK script `cmd` with the endpoint, token and service name it
/// reads from its environment, off the async runtime; its stdout. A script
/// that exits unsuccessfully fails the test with its output.
async fn run_script(mut cmd: Command, url: &str, token: &str, service: &str) -> String {
    cmd.env("ENDPOINT", url)
        .env("TOKEN", token)
        .env("SERVICE", service);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("sdk script runs"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sdk script failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn python_sdk_traces_metrics_and_logs_arrive_in_their_data_streams() {
    let Some(py) = python("python_sdk_traces_metrics_and_logs_arrive_in_their_data_streams") else {
        return;
    };
    everything_arrives(py, Exporter::Http).await;
}

#[tokio::test]
async fn python_sdk_over_grpc_traces_metrics_and_logs_arrive_in_their_data_streams() {
    let Some(py) =
        python("python_sdk_over_grpc_traces_metrics_and_logs_arrive_in_their_data_streams")
    else {
        return;
    };
    everything_arrives(py, Exporter::Grpc).await;
}

async fn everything_arrives(py: PathBuf, exporter: Exporter) {
    let (mut s, url) = server(exporter);
    let out = run_sdk(py, exporter, &url, TOKEN, "py-otel").await;
    assert!(out.contains("traces SUCCESS"), "{out}");
    assert!(out.contains("metrics SUCCESS"), "{out}");
    assert!(s.shutdown().await);
    let docs = s.docs();
    // (a transaction document repeats its id as `span.id`; spans have `span.type`)
    let count = |index: &str, field: &str| {
        docs.iter()
            .filter(|(i, d)| i == index && !d.pointer(field).is_none_or(|v| v.is_null()))
            .inspect(|(_, d)| {
                assert_eq!(d["service"]["name"], "py-otel", "{index}: {d}");
                assert_eq!(d["agent"]["name"], "opentelemetry/python");
            })
            .count()
    };
    assert_eq!(
        count("traces-apm-default", "/transaction/type"),
        1,
        "{docs:?}"
    );
    assert_eq!(count("traces-apm-default", "/span/type"), 1);
    assert_eq!(count("logs-apm.error-default", "/error"), 1);
    assert!(count("metrics-apm.app.py_otel-default", "/metricset") >= 1);
    let log = docs
        .iter()
        .find(|(i, d)| i == "logs-apm.app.py_otel-default" && d["message"] == "stock is low")
        .expect("the log record");
    assert_eq!(log.1["service"]["name"], "py-otel");
    let err = docs
        .iter()
        .find(|(i, _)| i == "logs-apm.error-default")
        .expect("error");
    assert_eq!(err.1["error"]["exception"][0]["type"], "ValueError");
    assert_eq!(err.1["error"]["exception"][0]["message"], "checkout failed");
}

#[tokio::test]
async fn python_sdk_with_a_wrong_token_is_refused() {
    let Some(py) = python("python_sdk_with_a_wrong_token_is_refused") else {
        return;
    };
    wrong_token_is_refused(py, Exporter::Http).await;
}

#[tokio::test]
async fn python_sdk_over_grpc_with_a_wrong_token_is_refused() {
    let Some(py) = python("python_sdk_over_grpc_with_a_wrong_token_is_refused") else {
        return;
    };
    wrong_token_is_refused(py, Exporter::Grpc).await;
}

async fn wrong_token_is_refused(py: PathBuf, exporter: Exporter) {
    let (mut s, url) = server(exporter);
    let out = run_sdk(py, exporter, &url, "wrong", "py-otel").await;
    assert!(out.contains("traces FAILURE"), "{out}");
    assert!(out.contains("metrics FAILURE"), "{out}");
    assert!(s.shutdown().await);
    assert!(s.docs().is_empty());
}

/// The installed Node.js SDK's `node_modules`, or SKIPPED (a failure on CI).
fn node_modules(test: &str) -> Option<PathBuf> {
    installed("otel-node/node_modules", "Node.js", test)
}

/// Runs agents/otel-node/app.js; its stdout (one result line per signal).
async fn run_node(modules: PathBuf, url: &str, token: &str, service: &str) -> String {
    let mut cmd = Command::new("node");
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agents/otel-node/app.js"))
        .env("NODE_PATH", modules);
    run_script(cmd, url, token, service).await
}

#[tokio::test]
async fn node_sdk_traces_metrics_and_logs_arrive_in_their_data_streams() {
    let Some(modules) =
        node_modules("node_sdk_traces_metrics_and_logs_arrive_in_their_data_streams")
    else {
        return;
    };
    let token = format!("apm-server.auth.secret_token={TOKEN}");
    let mut s = TestServer::start(&[&token]);
    let out = run_node(modules, &s.url, TOKEN, "node-otel").await;
    for signal in ["traces", "metrics", "logs"] {
        assert!(out.contains(&format!("{signal} SUCCESS")), "{out}");
    }
    assert!(s.shutdown().await);
    let docs = s.docs();
    for (index, d) in &docs {
        assert_eq!(d["service"]["name"], "node-otel", "{index}: {d}");
        assert_eq!(d["agent"]["name"], "opentelemetry/nodejs", "{index}: {d}");
    }
    let find = |index: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        docs.iter()
            .filter(|(i, d)| i == index && pred(d))
            .map(|(_, d)| d)
            .collect::<Vec<_>>()
    };
    // (processor.event is added by the ingest pipeline: tell them apart by
    // `transaction.type` / `span.type`)
    let tx = find("traces-apm-default", &|d| {
        d["transaction"]["type"].is_string()
    });
    assert_eq!(tx.len(), 1, "{docs:?}");
    assert_eq!(tx[0]["transaction"]["name"], "GET /checkout");
    assert_eq!(tx[0]["transaction"]["result"], "HTTP 5xx");
    let span = find("traces-apm-default", &|d| d["span"]["type"].is_string());
    assert_eq!(span.len(), 1, "{docs:?}");
    assert_eq!(span[0]["span"]["subtype"], "postgresql");
    assert_eq!(span[0]["parent"]["id"], tx[0]["transaction"]["id"]);
    let err = find("logs-apm.error-default", &|_| true);
    assert_eq!(err.len(), 1, "{docs:?}");
    assert_eq!(err[0]["error"]["exception"][0]["type"], "TypeError");
    assert_eq!(
        err[0]["error"]["exception"][0]["message"],
        "checkout failed"
    );
    assert_eq!(err[0]["transaction"]["id"], tx[0]["transaction"]["id"]);
    assert_eq!(
        err[0]["http"]["response"]["status_code"], 500,
        "the span's HTTP context"
    );
    let metrics = find("metrics-apm.app.node_otel-default", &|_| true);
    let names: Vec<&str> = metrics
        .iter()
        .flat_map(|d| d["metricset"]["samples"].as_array().into_iter().flatten())
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"orders.placed"), "{names:?}");
    assert!(names.contains(&"checkout.duration"), "{names:?}");
    let logs = find("logs-apm.app.node_otel-default", &|d| {
        d["message"] == "stock is low"
    });
    assert_eq!(logs.len(), 1, "{docs:?}");
    assert_eq!(logs[0]["log"]["level"], "WARN");
}

#[tokio::test]
async fn node_sdk_with_a_wrong_token_is_refused() {
    let Some(modules) = node_modules("node_sdk_with_a_wrong_token_is_refused") else {
        return;
    };
    let token = format!("apm-server.auth.secret_token={TOKEN}");
    let mut s = TestServer::start(&[&token]);
    let out = run_node(modules, &s.url, "wrong", "node-otel").await;
    for signal in ["traces", "metrics", "logs"] {
        assert!(out.contains(&format!("{signal} FAILURE 401")), "{out}");
    }
    assert!(s.shutdown().await);
    assert!(s.docs().is_empty());
}
