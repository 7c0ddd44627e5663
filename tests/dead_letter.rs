//! Poison events through the real server: an event whose processing panics
//! in the sourcemap or indexer stage (injected with the pipeline's test
//! hooks) is tried once more, then written to the dead-letter file with its
//! reason; the rest of its batch is indexed, nothing loops, the server keeps
//! serving, and the accounting identity holds — with either queue type.
//!
//! Run with `cargo test --test dead_letter`.

mod common;
use apm_rs::model::Event;
use apm_rs::pipeline::{EventsHook, PipelineHooks};
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Four errors and one span (the poison event) of service `service`.
fn batch(service: &str) -> Vec<u8> {
    let mut s = format!(
        "{{\"metadata\":{{\"service\":{{\"name\":\"{service}\",\"agent\":{{\"name\":\"python\",\"version\":\"1.0.0\"}}}}}}}}\n"
    );
    for i in 0..4 {
        s.push_str(&format!(
            "{{\"error\":{{\"id\":\"{i:016x}\",\"exception\":{{\"message\":\"fine {i}\",\"type\":\"Err\"}}}}}}\n"
        ));
    }
    s.push_str("{\"span\":{\"id\":\"00000000000000aa\",\"trace_id\":\"0123456789abcdef0123456789abcdef\",\"parent_id\":\"0123456789abcdef\",\"transaction_id\":\"0123456789abcdef\",\"name\":\"POISON\",\"type\":\"db\",\"start\":1.0,\"duration\":2.0}}\n");
    s.into_bytes()
}

/// A hook that panics whenever the events it sees include the span of
/// `service`, counting how often it saw that span.
fn poison(service: &'static str, seen: Arc<AtomicUsize>) -> Option<EventsHook> {
    Some(Arc::new(move |evs: &[Event]| {
        if evs
            .iter()
            .any(|e| e.service_name() == service && e.kind() == "span")
        {
            seen.fetch_add(1, Ordering::SeqCst);
            panic!("injected poison ({service})");
        }
    }))
}

async fn poison_events_are_retried_once_then_dead_lettered(extra: &[&str]) {
    let (in_sourcemap, in_indexer) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hooks = PipelineHooks {
        before_sourcemap: poison("poison-sourcemap", Arc::clone(&in_sourcemap)),
        before_index: poison("poison-indexer", Arc::clone(&in_indexer)),
        ..Default::default()
    };
    let mut opts = vec!["pipeline.aggregator.enabled=false"];
    opts.extend_from_slice(extra);
    let mut srv = TestServer::start_with(&opts, None, hooks);
    let url = format!("{}/intake/v2/events", srv.url);
    let ndjson = [("content-type", "application/x-ndjson")];
    for service in ["poison-sourcemap", "poison-indexer", "healthy"] {
        let reply = post(&url, batch(service), &ndjson).await;
        assert_eq!(reply.status, 202, "{service}: {}", reply.body);
    }

    // Every event but the two poison spans is indexed; nothing else is pending.
    let t = srv.telemetry();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let a = t.accounting();
        if a.received == 15 && a.in_flight() == 0 && srv.docs().len() >= 13 {
            break;
        }
        assert!(Instant::now() < until, "not drained: {a:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let docs = srv.docs();
    assert_eq!(docs.len(), 13, "{docs:?}");
    let spans: Vec<_> = docs
        .iter()
        .filter(|(index, _)| index.starts_with("traces-apm"))
        .collect();
    assert_eq!(
        spans.len(),
        1,
        "only the healthy span is indexed: {spans:?}"
    );
    assert_eq!(spans[0].1["service"]["name"], "healthy");

    // Each poison span was tried exactly twice: no loop.
    assert_eq!(in_sourcemap.load(Ordering::SeqCst), 2, "batch, then alone");
    assert_eq!(
        in_indexer.load(Ordering::SeqCst),
        2,
        "first try, then once more"
    );

    let letters = srv.dead_letters();
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (letter, stage, service) in [
        (&letters[0], "sourcemap", "poison-sourcemap"),
        (&letters[1], "indexer", "poison-indexer"),
    ] {
        assert_eq!(letter["stage"], stage, "{letter}");
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("injected poison ({service})")),
            "{letter}"
        );
        assert!(
            letter["time"].as_str().is_some_and(|t| t.contains('T')),
            "{letter}"
        );
        let index = letter["action"]["create"]["_index"]
            .as_str()
            .unwrap_or_default();
        assert!(index.starts_with("traces-apm"), "{letter}");
        assert_eq!(letter["document"]["span"]["name"], "POISON", "{letter}");
        assert_eq!(letter["document"]["service"]["name"], service, "{letter}");
    }

    let a = t.accounting();
    assert!(a.balanced(), "{a:?}");
    assert_eq!(
        (a.rejected, a.accepted, a.indexed, a.failed),
        (0, 15, 13, 2),
        "{a:?}"
    );
    assert_eq!(t.events_failed.with_label_values(&["dead_letter"]).get(), 2);
    for stage in ["sourcemap", "indexer"] {
        assert_eq!(
            t.stage_panics.with_label_values(&[stage]).get(),
            0,
            "caught per event, no instance restarted ({stage})"
        );
    }
    let metrics = t.render();
    assert!(
        metrics.contains("apm_rs_dead_letter_events_total 2"),
        "{metrics}"
    );

    // The server keeps serving.
    let reply = post(&url, batch("healthy"), &ndjson).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert!(srv.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_memory_queue_a_poison_event_is_retried_once_then_dead_lettered() {
    poison_events_are_retried_once_then_dead_lettered(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_disk_queue_a_poison_event_is_retried_once_then_dead_lettered() {
    let q = tempfile::tempdir().expect("tempdir");
    let path = format!("queue.disk.path={}", q.path().display());
    poison_events_are_retried_once_then_dead_lettered(&["queue.type=disk", &path]).await;
}

/// A full dead-letter file never blocks: the poison event is counted
/// failed (panic) and as dropped, and the rest is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_file_counts_the_poison_event_and_blocks_nothing() {
    let seen = Arc::new(AtomicUsize::new(0));
    let hooks = PipelineHooks {
        before_index: poison("poison-indexer", Arc::clone(&seen)),
        ..Default::default()
    };
    let mut srv = TestServer::start_with(
        &[
            "pipeline.aggregator.enabled=false",
            "queue.dead_letter.max_size=10",
        ],
        None,
        hooks,
    );
    let url = format!("{}/intake/v2/events", srv.url);
    let reply = post(
        &url,
        batch("poison-indexer"),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let t = srv.telemetry();
    let until = Instant::now() + Duration::from_secs(30);
    while t.accounting().in_flight() != 0 || srv.docs().len() < 4 {
        assert!(Instant::now() < until, "{:?}", t.accounting());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    assert!(srv.dead_letters().is_empty());
    assert_eq!(t.events_failed.with_label_values(&["panic"]).get(), 1);
    let metrics = t.render();
    assert!(
        metrics.contains("apm_rs_dead_letter_dropped_total{reason=\"full\"} 1"),
        "{metrics}"
    );
    assert!(srv.shutdown().await);
}
