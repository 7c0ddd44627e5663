//! The Redis output against a real redis-server (Debian's, started by
//! `.ci/redis.sh`; `APM_RS_REDIS_URL`), through the real server: messages
//! land in the rendered list keys and decode to the documents the
//! Elasticsearch output writes; a Redis that goes away mid-load and comes
//! back loses nothing; a refused password is counted, not lost silently.

mod common;

use common::brokers::{canonical, component, free_port, program, split_message};
use common::{post, TestServer};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// These tests count event documents: the server's own aggregated metrics
// (tests/aggregation.rs) are switched off so they do not mix in.
const NO_AGGREGATION: &str = "pipeline.aggregator.enabled=false";

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn redis_conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("test connects to redis")
}

/// A private redis-server on `port` (tests that stop it must not share it).
fn spawn_redis(bin: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    let child = Command::new(bin)
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "redis-server did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_every_kind_land_in_their_list_as_the_elasticsearch_documents() {
    let test = "documents_of_every_kind_land_in_their_list_as_the_elasticsearch_documents";
    let (Some(url), Some(corpus)) = (component("APM_RS_REDIS_URL", test), common::corpus(test))
    else {
        return;
    };
    let payload = std::fs::read(corpus.join("intake-v2/events.ndjson")).unwrap();
    let prefix = format!("it-{}-{}", std::process::id(), free_port());
    let hosts = url.trim_start_matches("redis://").to_string();

    // The same events through the file sink: the Elasticsearch output's documents.
    let mut reference = TestServer::start(&[NO_AGGREGATION]);
    let r = post(
        &format!("{}/intake/v2/events", reference.url),
        payload.clone(),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(reference.shutdown().await);
    let mut expected: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for (index, doc) in reference.docs() {
        let ty = index.split('-').next().unwrap().to_string();
        expected
            .entry(format!("{prefix}-{ty}"))
            .or_default()
            .push(doc);
    }
    assert!(
        expected.len() >= 3,
        "events.ndjson covers several data stream types: {:?}",
        expected.keys()
    );

    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!("output.redis.hosts=[\"{hosts}\"]"),
        &format!("output.redis.key={prefix}-%{{[data_stream.type]}}"),
    ]);
    let r = post(
        &format!("{}/intake/v2/events", server.url),
        payload,
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let telemetry = std::sync::Arc::clone(&server.server.as_ref().unwrap().telemetry);
    assert!(server.shutdown().await);
    let acc = telemetry.accounting();
    assert_eq!(acc.failed, 0, "{acc:?}");
    assert_eq!(acc.indexed + acc.discarded, acc.accepted, "{acc:?}");

    let mut conn = redis_conn(&url);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}-*"))
        .query(&mut conn)
        .unwrap();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(keys_sorted, expected.keys().cloned().collect::<Vec<_>>());
    for (key, docs) in &expected {
        let msgs: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        let got = canonical(msgs.iter().map(|m| split_message(m)));
        assert_eq!(got, canonical(docs.clone()), "list {key}");
        let _: () = redis::cmd("DEL").arg(key).query(&mut conn).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_datatype_publishes_each_document() {
    let test = "channel_datatype_publishes_each_document";
    let Some(url) = component("APM_RS_REDIS_URL", test) else {
        return;
    };
    let channel = format!("ch-{}-{}", std::process::id(), free_port());
    let mut sub = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(&channel).unwrap();

    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!(
            "output.redis.hosts=[\"{}\"]",
            url.trim_start_matches("redis://")
        ),
        &format!("output.redis.key={channel}"),
        "output.redis.datatype=channel",
    ]);
    let r = post(
        &format!("{}/intake/v2/events", server.url),
        common::errors_payload(3, "chan-svc", "go"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let mut names = Vec::new();
    for _ in 0..3 {
        let msg = pubsub.get_message().expect("a published message");
        let doc = split_message(msg.get_payload_bytes());
        names.push(doc["service"]["name"].as_str().unwrap().to_string());
        assert_eq!(doc["data_stream"]["type"], "logs");
    }
    assert_eq!(names, ["chan-svc"; 3]);
    let telemetry = std::sync::Arc::clone(&server.server.as_ref().unwrap().telemetry);
    assert!(server.shutdown().await);
    assert_eq!(telemetry.accounting().indexed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_load_then_back_loses_nothing() {
    let test = "redis_down_mid_load_then_back_loses_nothing";
    let Some(bin) = program("redis-server", test) else {
        return;
    };
    let port = free_port();
    // Append-only file synced on every write: what Redis acknowledged survives the kill.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let durable = [
        "--dir",
        &dir,
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let mut redis = Some(spawn_redis(&bin, port, &durable));
    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!("output.redis.hosts=[\"127.0.0.1:{port}\"]"),
        "output.redis.key=load",
        "output.redis.bulk_max_size=50",
        "output.redis.timeout=1s",
        "output.redis.backoff.init=100ms",
        "output.redis.backoff.max=500ms",
        "output.redis.max_retries=100",
    ]);
    let url = format!("{}/intake/v2/events?verbose", server.url);
    let mut accepted = 0;
    let mut unavailable = 0;
    for round in 0..60 {
        if round == 20 {
            stop(redis.take().unwrap());
        }
        if round == 40 {
            redis = Some(spawn_redis(&bin, port, &durable));
        }
        let r = post(&url, common::errors_payload(20, "load", "go"), &[NDJSON]).await;
        match r.status {
            202 => accepted += r.accepted(),
            503 => {
                unavailable += 1;
                accepted += serde_json::from_str::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["accepted"].as_u64())
                    .unwrap_or(0);
            }
            s => panic!("unexpected status {s}: {}", r.body),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let telemetry = std::sync::Arc::clone(&server.server.as_ref().unwrap().telemetry);
    assert!(server.shutdown().await);
    let acc = telemetry.accounting();
    assert_eq!(acc.accepted, accepted, "{acc:?}");
    assert_eq!(acc.failed, 0, "{acc:?}");
    assert_eq!(
        acc.indexed, accepted,
        "{acc:?} (503 answers: {unavailable})"
    );
    let mut conn = redis_conn(&format!("redis://127.0.0.1:{port}"));
    let len: u64 = redis::cmd("LLEN").arg("load").query(&mut conn).unwrap();
    assert!(len >= accepted, "list holds {len}, {accepted} accepted");
    stop(redis.take().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_counts_the_documents_as_failed() {
    let test = "a_refused_password_counts_the_documents_as_failed";
    let Some(bin) = program("redis-server", test) else {
        return;
    };
    let port = free_port();
    let redis = spawn_redis(&bin, port, &["--requirepass", "right-secret"]);
    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!("output.redis.hosts=[\"127.0.0.1:{port}\"]"),
        "output.redis.password=wrong-secret",
        "output.redis.backoff.init=10ms",
    ]);
    let r = post(
        &format!("{}/intake/v2/events", server.url),
        common::errors_payload(5, "auth", "go"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let t = std::sync::Arc::clone(&server.server.as_ref().unwrap().telemetry);
    assert!(server.shutdown().await);
    let acc = t.accounting();
    assert_eq!(acc.indexed, 0, "{acc:?}");
    assert_eq!(acc.failed, 5, "{acc:?}");
    assert_eq!(
        t.events_failed
            .with_label_values(&["rejected_by_output"])
            .get(),
        5,
        "a refused password is not worth retrying"
    );
    stop(redis);
}

#[test]
fn two_enabled_outputs_stop_start_up_naming_both() {
    let err = apm_rs::config::from_overrides(vec![
        "output.redis.hosts=[\"r:6379\"]".to_string(),
        "output.console.enabled=true".to_string(),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("output.redis") && err.contains("output.console"),
        "{err}"
    );
}
