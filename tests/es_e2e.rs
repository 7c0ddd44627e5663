//! End to end: agents' events through the real HTTP server and pipeline into
//! the Elasticsearch double via the Elasticsearch output.

mod common;
use common::*;
use es_double::{EsDouble, Faults};
use std::time::{Duration, Instant};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn start(es: &EsDouble, extra: &[&str]) -> TestServer {
    common::start_with_es(&es.host(), extra)
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_ready(url: &str) -> Option<bool> {
    let r = send(reqwest::Method::GET, &format!("{url}/"), Vec::new(), &[]).await;
    r.json()["publish_ready"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_elasticsearch() {
    let es = EsDouble::start();
    let mut srv = start(&es, &[]);
    let url = format!("{}/intake/v2/events", srv.url);
    let mut accepted = 0;
    for i in 0..5 {
        let r = post(
            &url,
            gzip(&errors_payload(20, &format!("svc{i}"), "python")),
            &[NDJSON, ("content-encoding", "gzip")],
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
        accepted += 20;
    }
    wait_for("documents in the double", Duration::from_secs(10), || {
        common::event_docs(&es) == accepted
    })
    .await;
    let t = Instant::now();
    while publish_ready(&srv.url).await != Some(true) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "publish_ready stays false"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let indices = es.indices();
    assert!(
        indices.iter().all(|i| i.split('-').count() >= 3),
        "data stream names: {indices:?}"
    );
    let log = es.bulk_log();
    assert!(log
        .iter()
        .all(|b| b.gzip && b.query.contains("require_data_stream=true")));
    let telemetry = std::sync::Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await);
    let a = telemetry.accounting();
    // indexed also counts the aggregated metrics written at shutdown
    assert_eq!((a.indexed - a.produced, a.failed), (accepted, 0), "{a:?}");
    let metrics = telemetry.render();
    assert!(metrics.contains("apm_rs_output_es_bulk_requests_total{outcome=\"ok\"}"));
    // gzip bodies: the bytes sent are counted, and fewer than uncompressed
    let sent = counter(&metrics, "apm_rs_output_es_bulk_body_bytes_total");
    let raw = counter(&metrics, "apm_rs_output_es_bulk_raw_bytes_total");
    assert!(sent > 0 && raw > sent, "sent {sent}, uncompressed {raw}");
    assert_eq!(
        common::event_docs(&es),
        accepted,
        "nothing lost, nothing twice"
    );
}

/// The value of an unlabelled counter in a Prometheus text rendering (0 if absent).
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_elasticsearch_gives_503_within_queue_wait_and_loses_nothing() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        latency_ms: 2000,
        ..Default::default()
    });
    let mut srv = start(
        &es,
        &[
            "output.elasticsearch.max_requests=1",
            "output.elasticsearch.timeout=30s",
            "pipeline.queue_wait=300ms",
            "pipeline={decoder: {instances: 1, capacity: 1}, validator: {instances: 1, capacity: 1}, rate: {instances: 1, capacity: 1}, sourcemap: {instances: 1, capacity: 1}, aggregator: {instances: 1, capacity: 1}, indexer: {instances: 1, capacity: 1}}",
        ],
    );
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let mut accepted = 0;
    let mut saw_503 = false;
    for i in 0..60 {
        let t0 = Instant::now();
        let r = post(
            &url,
            errors_payload(10, &format!("svc{i}"), "go"),
            &[NDJSON],
        )
        .await;
        let took = t0.elapsed();
        accepted += r.accepted();
        if r.status == 503 {
            assert_eq!(
                r.json()["errors"][0]["message"],
                "cannot handle stream: cannot process batch: queue is full"
            );
            assert!(took < Duration::from_secs(4), "503 took {took:?}");
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, 202, "{}", r.body);
        // give the indexer time to fill the bulk slot
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert!(
        saw_503,
        "a slow Elasticsearch must lead to 503 queue is full"
    );
    es.clear_faults();
    assert!(srv.shutdown().await, "drained in time");
    assert_eq!(
        common::event_docs(&es),
        accepted,
        "every accepted event indexed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_elasticsearch_is_down_then_delivers() {
    let es = EsDouble::start();
    es.down_for(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // retry budget 5 × 1 s outlasts the 3 s outage
    let mut srv = start(&es, &["output.elasticsearch.backoff.max=1s"]);
    assert_eq!(publish_ready(&srv.url).await, Some(false));
    let r = post(
        &format!("{}/intake/v2/events", srv.url),
        errors_payload(15, "svc", "java"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "accepted while Elasticsearch is down");
    wait_for("delivery after the outage", Duration::from_secs(15), || {
        common::event_docs(&es) == 15
    })
    .await;
    let t = Instant::now();
    while publish_ready(&srv.url).await != Some(true) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "publish_ready stays false"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let telemetry = std::sync::Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await);
    let a = telemetry.accounting();
    assert_eq!(
        (a.accepted, a.indexed - a.produced, a.failed),
        (15, 15, 0),
        "{a:?}"
    );
    assert_eq!(common::event_docs(&es), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_429_and_5xx_lose_nothing() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        item_429_fraction: 0.5,
        item_fault_limit: Some(150),
        request_status: Some(503),
        request_fault_limit: Some(3),
        ..Default::default()
    });
    let mut srv = start(&es, &["output.elasticsearch.max_retries=10"]);
    let telemetry = std::sync::Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    let url = format!("{}/intake/v2/events", srv.url);
    for i in 0..10 {
        let r = post(
            &url,
            errors_payload(30, &format!("svc{i}"), "ruby"),
            &[NDJSON],
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    wait_for("all 300 indexed", Duration::from_secs(20), || {
        common::event_docs(&es) >= 300
    })
    .await;
    assert!(srv.shutdown().await);
    let a = telemetry.accounting();
    assert_eq!(
        (a.accepted, a.indexed - a.produced, a.failed),
        (300, 300, 0),
        "{a:?}"
    );
    assert_eq!(
        common::event_docs(&es),
        300,
        "resends after 429/503 never duplicate"
    );
    assert!(
        telemetry
            .render()
            .contains("apm_rs_output_es_documents_resent_total"),
        "resend counter exported"
    );
}
