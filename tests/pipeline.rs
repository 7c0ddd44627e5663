//! Back-pressure, accounting, supervision and graceful shutdown, through the
//! real HTTP server.

mod common;
use apm_rs::pipeline::PipelineHooks;
use common::gate::{Gate, GatedFactory};
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

/// Every stage one instance with an inbox of one batch.
const ONE_SLOT_PIPELINE: &str = "pipeline={decoder: {instances: 1, capacity: 1}, validator: {instances: 1, capacity: 1}, rate: {instances: 1, capacity: 1}, sourcemap: {instances: 1, capacity: 1}, aggregator: {instances: 1, capacity: 1}, indexer: {instances: 1, capacity: 1}}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_sink_gives_503_within_queue_wait_and_loses_nothing() {
    let gate = Arc::new(Gate::default());
    let mut srv = TestServer::start_with(
        &["pipeline.queue_wait=300ms", ONE_SLOT_PIPELINE],
        Some(Arc::new(GatedFactory(Arc::clone(&gate)))),
        PipelineHooks::default(),
    );
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let mut accepted = 0;
    let mut saw_503 = false;
    for i in 0..30 {
        let t0 = Instant::now();
        let r = post(
            &url,
            errors_payload(10, &format!("svc{i}"), "python"),
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
            assert_eq!(r.headers["connection"], "close");
            // queue_wait (0.3 s) for room, plus at most queue_wait + 1 s for an outcome
            assert!(took < Duration::from_secs(4), "503 took {took:?}");
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, 202);
    }
    assert!(saw_503, "a blocked sink must lead to 503 queue is full");
    // Unblock: every accepted event is written.
    *gate.open.lock() = true;
    gate.cv.notify_all();
    assert!(srv.shutdown().await, "drained in time");
    assert_eq!(
        *gate.docs.lock(),
        accepted,
        "every accepted event was written"
    );
}

#[tokio::test]
async fn accounting_counters_balance() {
    let srv = TestServer::start(&["apm-server.max_event_size=200"]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let mut body = errors_payload(12, "svc", "python");
    body.extend_from_slice(b"{\"unknown\":{}}\n");
    body.extend_from_slice(format!("{{\"error\":{{\"m\":\"{}\"}}}}\n", "y".repeat(300)).as_bytes());
    let r = post(&url, body, &[NDJSON]).await;
    assert_eq!((r.status, r.accepted()), (400, 12));
    // wait for the sink to flush
    let t0 = Instant::now();
    loop {
        let a = srv.telemetry().accounting();
        if a.in_flight() == 0 || t0.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = srv.telemetry().accounting();
    assert_eq!(a.received, 14);
    assert_eq!(a.rejected, 2);
    assert_eq!(a.accepted, 12);
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.in_flight(), 0, "{a:?}");
    assert_eq!(a.indexed + a.failed + a.discarded, 12);
    assert_eq!(srv.docs().len(), 12);
}

/// A panic injected into each stage kind: before the outcome (decoder,
/// validator, rate) caught by supervision, counted, the instance restarted
/// (the only one of its stage) and the request answered 500; after it
/// (sourcemap, indexer) caught per event, the event tried once more and
/// dead-lettered if it panics again, the request left at 202. Later
/// requests are unaffected and the accounting identity holds.
#[tokio::test]
async fn a_panic_in_any_stage_is_caught_counted_and_recovered() {
    use apm_rs::pipeline::EventsHook;
    fn boom() -> Option<EventsHook> {
        Some(Arc::new(|events: &[apm_rs::model::Event]| {
            if events.iter().any(|e| e.service_name() == "boom") {
                panic!("injected test panic");
            }
        }))
    }
    /// The indexer sees one event at a time: panic on the second one, mid-batch.
    fn boom_second() -> Option<EventsHook> {
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        Some(Arc::new(move |events: &[apm_rs::model::Event]| {
            for e in events {
                if e.service_name() == "boom"
                    && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
                {
                    panic!("injected test panic");
                }
            }
        }))
    }
    type Table = [(&'static str, fn() -> PipelineHooks, u16, &'static str); 5];
    let table: Table = [
        (
            "decoder",
            || PipelineHooks {
                after_decode: boom(),
                ..Default::default()
            },
            500,
            "internal",
        ),
        (
            "validator",
            || PipelineHooks {
                before_validate: boom(),
                ..Default::default()
            },
            500,
            "internal",
        ),
        (
            "rate",
            || PipelineHooks {
                before_rate: boom(),
                ..Default::default()
            },
            500,
            "internal",
        ),
        (
            "sourcemap",
            || PipelineHooks {
                before_sourcemap: boom(),
                ..Default::default()
            },
            202,
            "dead_letter",
        ),
        (
            "indexer",
            || PipelineHooks {
                before_index: boom_second(),
                ..Default::default()
            },
            202,
            "dead_letter",
        ),
    ];
    for (stage, hooks, status, counted_as) in table {
        let one = format!("pipeline.{stage}.instances=1");
        let mut srv = TestServer::start_with(&[&one], None, hooks());
        let url = format!("{}/intake/v2/events?verbose", srv.url);
        let r = post(&url, errors_payload(3, "boom", "python"), &[NDJSON]).await;
        assert_eq!(r.status, status, "{stage}: {}", r.body);
        // The single instance was restarted: the stage keeps serving.
        for i in 1..=3 {
            let r = post(&url, errors_payload(3, "fine", "python"), &[NDJSON]).await;
            assert_eq!((r.status, r.accepted()), (202, 3), "{stage}: {}", r.body);
            // Counted accepted before the 202 was released.
            let boom_accepted = if status == 202 { 3 } else { 0 };
            assert!(
                srv.telemetry().events_accepted.get() >= boom_accepted + 3 * i,
                "{stage}"
            );
        }
        let t = Arc::clone(&srv.server.as_ref().expect("running").telemetry);
        assert!(srv.shutdown().await, "{stage}: drained");
        // (after the drain: sourcemap and indexer panic after the 202; they
        // catch it per event, retry once and dead-letter, restarting nothing)
        assert_eq!(
            t.stage_panics.with_label_values(&[stage]).get(),
            u64::from(status != 202),
            "{stage}"
        );
        let a = t.accounting();
        println!(
            "IDENTITY | panic in {stage} | received={} rejected={} indexed={} failed={} | {}",
            a.received,
            a.rejected,
            a.indexed,
            a.failed,
            if a.received + a.produced == a.rejected + a.indexed + a.failed + a.discarded {
                "holds"
            } else {
                "BROKEN"
            }
        );
        assert_eq!(a.received, 12, "{stage}: {a:?}");
        assert_eq!(
            a.received + a.produced,
            a.rejected + a.indexed + a.failed,
            "{stage}: {a:?}"
        );
        // The indexer panicked once, on the second event: its retry
        // succeeds, so nothing is lost; the sourcemap hook panics on every
        // try, so the three events are dead-lettered.
        let lost_want = if stage == "indexer" { 0 } else { 3 };
        assert_eq!(a.indexed - a.produced, 12 - lost_want, "{stage}: {a:?}");
        assert_eq!(srv.docs().len() as u64, 12 - lost_want, "{stage}");
        let lost = if counted_as == "internal" {
            t.events_rejected.with_label_values(&["internal"]).get()
        } else {
            t.events_failed.with_label_values(&["dead_letter"]).get()
        };
        assert_eq!(
            (lost, a.rejected + a.failed),
            (lost_want, lost_want),
            "{stage}: {a:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_drains_every_accepted_event() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_apm-rs"))
        .args([
            "-E",
            &format!("apm-server.host=127.0.0.1:{port}"),
            "-E",
            &format!("output.file.path={}", dir.path().display()),
            "-E",
            "logging.level=warn",
        ])
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/intake/v2/events?verbose");
    // wait until it listens
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
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (url, stop) = (url.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut accepted = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = errors_payload(25, &format!("w{w}"), "python");
                match c
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        if let Ok(text) = r.text().await {
                            if let Ok(j) = serde_json::from_str::<serde_json::Value>(&text) {
                                accepted += j["accepted"].as_u64().unwrap_or(0);
                            }
                        }
                        if status != 202 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert!(status.success(), "exit status {status:?}");
    assert!(accepted > 0, "load was accepted before SIGTERM");
    let docs = read_sink(dir.path());
    assert_eq!(
        docs.len() as u64,
        accepted,
        "every accepted event is in the sink"
    );
}

/// An output stuck for good: shutdown gives up at its deadline (plus the
/// grace), and books what is still uncounted so the identity holds at exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_deadline_still_accounts_for_every_event() {
    let gate = Arc::new(Gate::default()); // never opened
    let mut srv = TestServer::start_with(
        &[
            "apm-server.shutdown_timeout=1s",
            "pipeline.queue_wait=300ms",
            ONE_SLOT_PIPELINE,
        ],
        Some(Arc::new(GatedFactory(Arc::clone(&gate)))),
        PipelineHooks::default(),
    );
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let mut accepted = 0;
    for i in 0..30 {
        let r = post(
            &url,
            errors_payload(10, &format!("s{i}"), "python"),
            &[NDJSON],
        )
        .await;
        accepted += r.accepted();
        if r.status == 503 {
            break;
        }
    }
    assert!(accepted > 0);
    let t = Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    let t0 = Instant::now();
    assert!(!srv.shutdown().await, "a stuck output cannot drain");
    let took = t0.elapsed();
    let a = t.accounting();
    println!(
        "IDENTITY | shutdown past its deadline, output stuck | received={} rejected={} indexed={} failed={} | {} | took {took:?}",
        a.received,
        a.rejected,
        a.indexed,
        a.failed,
        if a.received + a.produced == a.rejected + a.indexed + a.failed { "holds" } else { "BROKEN" }
    );
    assert_eq!(
        a.received + a.produced,
        a.rejected + a.indexed + a.failed,
        "{a:?}"
    );
    assert_eq!(a.accepted, accepted, "{a:?}");
    assert_eq!(
        t.events_failed.with_label_values(&["shutdown"]).get(),
        accepted + a.produced,
        "{a:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // let the stuck indexer go
    *gate.open.lock() = true;
    gate.cv.notify_all();
}
