//! The real OpenTelemetry Python SDK (its OTLP/HTTP protobuf and OTLP/gRPC
//! exporters, pinned in agents/otel-python, installed by .ci/agents.sh)
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

fn python(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("APM_RS_AGENTS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/apm-rs/agents")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"));
    let py = dir.join("otel-python/bin/python");
    if py.exists() {
        return Some(py);
    }
    let msg = format!(
        "OpenTelemetry Python SDK not installed at {} (run .ci/agents.sh)",
        py.display()
    );
    if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
        panic!("{test}: {msg} (CI=true: the SDK is required)");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    None
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
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agents/otel-python/app.py");
    let (url, token, service) = (url.to_owned(), token.to_owned(), service.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(py);
        cmd.arg(script);
        if let Exporter::Grpc = exporter {
            cmd.arg("--grpc");
        }
        cmd.env("ENDPOINT", url)
            .env("TOKEN", token)
            .env("SERVICE", service)
            .output()
            .expect("python runs")
    })
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
