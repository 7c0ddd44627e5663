//! The console output through the real binary: every accepted event is
//! written to standard output as one JSON document per line (the document
//! the Elasticsearch output writes, plus `@metadata`), or indented with
//! `codec.json.pretty`; logs stay on standard error.

mod common;

use common::brokers::{canonical, free_port, split_message};
use common::{post, TestServer};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

/// Runs the binary with the console output, sends `payload`, stops it with
/// SIGTERM and returns its standard output.
async fn console_run(payload: Vec<u8>, extra: &[&str]) -> String {
    let port = free_port();
    let mut args = vec![
        "-E".to_string(),
        format!("apm-server.host=127.0.0.1:{port}"),
        "-E".to_string(),
        "output.console.enabled=true".to_string(),
        // Event documents only: the server's own aggregated metrics are off.
        "-E".to_string(),
        "pipeline.aggregator.enabled=false".to_string(),
    ];
    for e in extra {
        args.push("-E".into());
        args.push(e.to_string());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_apm-rs"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).unwrap();
        s
    });
    let t0 = Instant::now();
    while reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post(
        &format!("http://127.0.0.1:{port}/intake/v2/events"),
        payload,
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    // SAFETY: signalling our own child process by its id.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    reader.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_is_one_line_on_stdout_as_the_elasticsearch_document() {
    let test = "every_document_is_one_line_on_stdout_as_the_elasticsearch_document";
    let Some(corpus) = common::corpus(test) else {
        return;
    };
    let payload = std::fs::read(corpus.join("intake-v2/events.ndjson")).unwrap();
    let mut reference = TestServer::start(&[]);
    let r = post(
        &format!("{}/intake/v2/events", reference.url),
        payload.clone(),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(reference.shutdown().await);
    let expected = canonical(reference.docs().into_iter().map(|(_, d)| d));

    let out = console_run(payload, &[]).await;
    let got = canonical(out.lines().map(|l| split_message(l.as_bytes())));
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pretty_codec_indents_each_document() {
    let out = console_run(
        common::errors_payload(2, "pretty", "go"),
        &["output.console.codec.json.pretty=true"],
    )
    .await;
    assert!(out.lines().count() > 10, "{out}");
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(docs.len(), 2);
    for d in docs {
        let doc = split_message(d.to_string().as_bytes());
        assert_eq!(doc["service"]["name"], "pretty");
    }
}
