//! The published Python agent (`elastic-apm`) with `transaction_sample_rate`
//! 0.1 against the real server: the transaction metrics the server writes
//! count every transaction it received at its representative weight, and
//! estimate every transaction the program ended.
//!
//! Agents speaking to an 8.x+ server send only sampled transactions (each
//! carrying `sample_rate`), so `_doc_count` is 10 × the sampled ones: the
//! test checks that exactly, and that it is within a generous statistical
//! bound of the transactions ended (binomial, ±5σ).
//!
//! Where the agent is: `$APM_RS_AGENTS_DIR` (default
//! `$HOME/.cache/apm-rs/agents`, installed by `.ci/agents.sh`). Without it
//! the test prints `*** SKIPPED ***`, unless `CI=true`: then it fails.

mod common;

use common::TestServer;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SENT: u64 = 1000;

fn python() -> Option<PathBuf> {
    let dir = std::env::var_os("APM_RS_AGENTS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/apm-rs/agents"))
        })?;
    let py = dir.join("venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert!(
        !ci,
        "CI=true but the Python agent is missing at {}",
        py.display()
    );
    println!(
        "*** SKIPPED *** Python agent not installed at {} (run .ci/agents.sh)",
        py.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agent_at_sample_rate_one_tenth_is_fully_counted_in_transaction_metrics() {
    let Some(py) = python() else {
        return;
    };
    let mut srv = TestServer::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("agents/python/sampled.py");
    let mut c = Command::new(py);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ELASTIC_APM_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .arg(script)
        .env("APM_URL", &srv.url)
        .env("SERVICE_NAME", "sampled-python")
        .env("COUNT", SENT.to_string())
        .env("SAMPLE_RATE", "0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Python agent");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the agent") {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "agent timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().expect("agent output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success() && stdout.contains("AGENT-OK"),
        "agent failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await);

    let received_sampled = srv
        .docs()
        .iter()
        .filter(|(i, d)| i.starts_with("traces-") && d["transaction"]["sampled"] == true)
        .count() as u64;
    let received_unsampled = t.events_discarded.with_label_values(&["unsampled"]).get();
    let metrics: Vec<_> = srv
        .all_docs()
        .into_iter()
        .filter(|(_, d)| {
            d["metricset"]["name"] == "transaction"
                && d["metricset"]["interval"] == "1m"
                && d["service"]["name"] == "sampled-python"
        })
        .collect();
    assert!(!metrics.is_empty(), "transaction metrics were written");
    let doc_count: u64 = metrics
        .iter()
        .map(|(_, d)| d["_doc_count"].as_u64().expect("_doc_count"))
        .sum();
    let histogram_count: u64 = metrics
        .iter()
        .flat_map(|(_, d)| {
            d["transaction"]["duration"]["histogram"]["counts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.as_u64())
        .sum();
    println!(
        "python agent, sample rate 0.1: ended {SENT}, sampled received {received_sampled}, \
         unsampled received {received_unsampled}, _doc_count {doc_count}"
    );
    assert_eq!(
        doc_count,
        10 * (received_sampled + received_unsampled),
        "every received transaction counts with weight 10"
    );
    assert_eq!(histogram_count, doc_count);
    assert!(
        (500..=1500).contains(&doc_count),
        "_doc_count {doc_count} estimates the {SENT} transactions ended"
    );
}
