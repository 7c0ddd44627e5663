//! Faults of Elasticsearch and of the process itself, under load, with the
//! Elasticsearch double: 429 storms, 5xx answers, slow answers, connections
//! cut mid-answer, an outage of 30 s, SIGTERM in the middle of a load, and
//! panics injected into stages. After each, the accounting identity
//! (received = rejected + indexed + failed) is read from `/metrics` (or from
//! the binary's `shutdown complete` line), printed as an `IDENTITY | ...`
//! line and asserted; the documents in the double are checked against it.
//!
//! Run with `cargo test --test faults -- --nocapture` to see the lines.

mod common;
use common::identity::{scrape_until_drained, Identity};
use common::*;
use es_double::{EsDouble, Faults};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ERRORS_INDEX: &str = "logs-apm.error-default";

/// One request body: metadata and `n` error events with ids unique over the
/// whole test (`worker`, `request`, `i`).
fn payload(service: &str, worker: usize, request: usize, n: usize) -> Vec<u8> {
    let mut s = format!(
        "{{\"metadata\":{{\"service\":{{\"name\":\"{service}\",\"agent\":{{\"name\":\"python\",\"version\":\"1.0.0\"}}}}}}}}\n"
    );
    for i in 0..n {
        let id = ((worker as u64) << 40) | ((request as u64) << 16) | i as u64;
        s.push_str(&format!(
            "{{\"error\":{{\"id\":\"{id:016x}\",\"exception\":{{\"message\":\"fault {i}\",\"type\":\"Err\"}}}}}}\n"
        ));
    }
    s.into_bytes()
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Load {
    /// Requests by HTTP status (0 = no answer).
    statuses: BTreeMap<u16, u64>,
    /// Sum of `accepted` over the answers.
    accepted: u64,
    /// Events in the requests sent.
    sent: u64,
}

impl Load {
    fn add(&mut self, o: Load) {
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        self.accepted += o.accepted;
        self.sent += o.sent;
    }
}

/// `workers` clients, each sending up to `requests` requests of `events` events
/// (service `service-w<k>`), one after the other; stops early on `stop`.
async fn load(
    url: &str,
    service: &str,
    workers: usize,
    requests: usize,
    events: usize,
    stop: Arc<AtomicBool>,
) -> Load {
    let url = format!("{url}/intake/v2/events?verbose");
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (url, stop, service) = (url.clone(), Arc::clone(&stop), format!("{service}-w{w}"));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Load::default();
            for r in 0..requests {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let res = c
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(payload(&service, w, r, events))
                    .send()
                    .await;
                let status = match res {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        if let Ok(text) = resp.text().await {
                            if let Ok(j) = serde_json::from_str::<serde_json::Value>(&text) {
                                out.accepted += j["accepted"].as_u64().unwrap_or(0);
                            }
                        }
                        status
                    }
                    Err(_) => 0,
                };
                *out.statuses.entry(status).or_default() += 1;
                out.sent += events as u64;
                if status == 0 {
                    // the server went away (SIGTERM)
                    break;
                }
            }
            out
        }));
    }
    let mut total = Load::default();
    for t in tasks {
        total.add(t.await.expect("load task"));
    }
    total
}

/// What is in the double: documents of the errors index, and distinct ids.
fn es_docs(es: &EsDouble) -> (u64, u64) {
    let docs = es.docs(ERRORS_INDEX);
    let ids: HashSet<String> = docs
        .iter()
        .filter_map(|d| d["error"]["id"].as_str().map(str::to_string))
        .collect();
    (docs.len() as u64, ids.len() as u64)
}

/// The faults' base overrides: metrics on, bulks of about 100 documents so a
/// load makes many of them.
const FAULT_BASE: [&str; 2] = [
    "monitoring.metrics_host=127.0.0.1:0",
    "output.elasticsearch.flush_bytes=32KiB",
];

fn es_overrides(es: &EsDouble, extra: &[&str]) -> Vec<String> {
    let all: Vec<&str> = FAULT_BASE.iter().chain(extra).copied().collect();
    common::es_output_overrides(&es.host(), &all)
}

fn start(es: &EsDouble, extra: &[&str]) -> TestServer {
    let all: Vec<&str> = FAULT_BASE.iter().chain(extra).copied().collect();
    common::start_with_es(&es.host(), &all)
}

fn metrics_addr(srv: &TestServer) -> std::net::SocketAddr {
    srv.server
        .as_ref()
        .and_then(|s| s.metrics_addr)
        .expect("metrics listener")
}

/// Runs `workers × requests × events` against a fresh server and double with
/// `faults` set (for `window`, or until used up); waits for the counters to
/// drain and prints the identity line.
struct Case<'a> {
    name: &'a str,
    faults: Faults,
    overrides: &'a [&'a str],
    workers: usize,
    requests: usize,
    events: usize,
    /// Clear the faults after this long; `None`: leave them (count-limited
    /// faults run out by themselves) until the counters have drained.
    window: Option<Duration>,
}

struct Outcome {
    id: Identity,
    docs: u64,
    distinct: u64,
    bulks: u64,
}

async fn run(case: Case<'_>) -> Outcome {
    let es = EsDouble::start();
    let mut srv = start(&es, case.overrides);
    es.set_faults(case.faults);
    let es = Arc::new(es);
    let clearer = case.window.map(|d| {
        let es = Arc::clone(&es);
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            es.clear_faults();
        })
    });
    let l = load(
        &srv.url,
        "faults",
        case.workers,
        case.requests,
        case.events,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    if let Some(c) = clearer {
        c.await.expect("clearer");
    }
    let id = scrape_until_drained(metrics_addr(&srv), Duration::from_secs(60)).await;
    id.check(case.name);
    let (docs, distinct) = es_docs(&es);
    println!(
        "  {}: client statuses {:?}, client-accepted {}, docs in ES {docs} ({distinct} distinct, {} duplicates), bulk requests {}",
        case.name,
        l.statuses,
        l.accepted,
        docs - distinct,
        es.bulk_requests()
    );
    assert_eq!(
        l.accepted, id.accepted,
        "the clients were told of exactly the accepted events"
    );
    if l.statuses.keys().all(|s| *s == 202) {
        assert_eq!(id.received, l.sent, "every event sent was counted received");
    } else {
        assert!(id.received <= l.sent);
    }
    assert!(srv.shutdown().await, "drained in time");
    Outcome {
        id,
        docs,
        distinct,
        bulks: es.bulk_requests(),
    }
}

fn storm_429() -> Faults {
    Faults {
        request_status: Some(429),
        request_fault_limit: Some(30),
        item_429_fraction: 0.3,
        item_fault_limit: Some(600),
        ..Default::default()
    }
}

/// A 429 storm (whole requests and items) with the given backoff: a 429
/// stores nothing, so there are no duplicates and nothing is lost.
async fn storm_429_with_backoff(name: &str, init: &str, max: &str) {
    let init = format!("output.elasticsearch.backoff.init={init}");
    let max = format!("output.elasticsearch.backoff.max={max}");
    let o = run(Case {
        name,
        faults: storm_429(),
        overrides: &[
            &init,
            &max,
            "output.elasticsearch.max_retries=20",
            "output.elasticsearch.retry_budget=60s",
        ],
        workers: 4,
        requests: 40,
        events: 10,
        window: None,
    })
    .await;
    assert_eq!(o.id.failed, 0, "{:?}", o.id);
    let events = o.id.indexed - o.id.produced;
    assert_eq!((o.docs, o.distinct), (events, events));
    assert!(o.bulks > 30, "the storm was hit ({} bulks)", o.bulks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_429_short_backoff_loses_nothing() {
    storm_429_with_backoff("429 storm, backoff 20ms..200ms", "20ms", "200ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_429_long_backoff_loses_nothing() {
    storm_429_with_backoff("429 storm, backoff 200ms..2s", "200ms", "2s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_lose_nothing() {
    let faults = Faults {
        request_status: Some(500),
        request_fault_limit: Some(25),
        ..Default::default()
    };
    let o = run(Case {
        name: "5xx answers (25 bulks answered 500)",
        faults,
        overrides: &[
            "output.elasticsearch.backoff.init=20ms",
            "output.elasticsearch.retry_budget=60s",
        ],
        workers: 4,
        requests: 40,
        events: 10,
        window: None,
    })
    .await;
    assert_eq!(o.id.failed, 0, "{:?}", o.id);
    let events = o.id.indexed - o.id.produced;
    assert_eq!((o.docs, o.distinct), (events, events));
    assert!(o.bulks > 25);
}

/// Slow answers: the double stores each bulk, then answers after 600 ms, past
/// the output's 400 ms timeout, for the first 2.5 s of the load; the output
/// resends. Without idempotent ids the resends duplicate; with them, none do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_past_the_timeout() {
    for (ids, name) in [
        (false, "slow answers 600ms > timeout 400ms, ids off"),
        (true, "slow answers 600ms > timeout 400ms, idempotent ids"),
    ] {
        let ids_opt = format!("output.elasticsearch.idempotent_ids={ids}");
        let o = run(Case {
            name,
            faults: Faults {
                bulk_response_delay_ms: 600,
                ..Default::default()
            },
            overrides: &[
                "output.elasticsearch.timeout=400ms",
                "output.elasticsearch.retry_budget=60s",
                &ids_opt,
            ],
            workers: 4,
            requests: 40,
            events: 10,
            window: Some(Duration::from_millis(2500)),
        })
        .await;
        assert_eq!(o.id.failed, 0, "{:?}", o.id);
        assert_eq!(
            o.distinct,
            o.id.indexed - o.id.produced,
            "every indexed event is in ES once or more"
        );
        if ids {
            assert_eq!(o.docs, o.distinct, "idempotent ids: no duplicates");
        } else {
            assert!(
                o.docs > o.distinct,
                "timed-out bulks were stored, then resent"
            );
        }
    }
}

/// The double stores each bulk and cuts the connection halfway through its
/// answer, for 30 bulks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_answer() {
    for (ids, name) in [
        (false, "connection cut mid-answer x30, ids off"),
        (true, "connection cut mid-answer x30, idempotent ids"),
    ] {
        let ids_opt = format!("output.elasticsearch.idempotent_ids={ids}");
        let o = run(Case {
            name,
            faults: Faults {
                drop_connection: true,
                request_fault_limit: Some(30),
                ..Default::default()
            },
            overrides: &[
                "output.elasticsearch.backoff.init=20ms",
                "output.elasticsearch.retry_budget=60s",
                &ids_opt,
            ],
            workers: 4,
            requests: 40,
            events: 10,
            window: None,
        })
        .await;
        assert_eq!(o.id.failed, 0, "{:?}", o.id);
        assert_eq!(o.distinct, o.id.indexed - o.id.produced);
        if ids {
            assert_eq!(o.docs, o.distinct, "idempotent ids: no duplicates");
        } else {
            assert!(o.docs > o.distinct, "cut bulks were stored, then resent");
        }
    }
}

/// Elasticsearch is down for 30 s in the middle of a load, then back.
async fn down_for_30s(name: &str, budget: &str) -> (Identity, Load, u64) {
    let es = EsDouble::start();
    let budget_opt = format!("output.elasticsearch.retry_budget={budget}");
    let mut srv = start(&es, &["output.elasticsearch.backoff.max=2s", &budget_opt]);
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let (url, stop) = (srv.url.clone(), Arc::clone(&stop));
        tokio::spawn(async move { load(&url, "down", 2, 100_000, 10, stop).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    es.down_for(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(31)).await;
    stop.store(true, Ordering::Relaxed);
    let l = loader.await.expect("load");
    let id = scrape_until_drained(metrics_addr(&srv), Duration::from_secs(90)).await;
    id.check(name);
    let (docs, distinct) = es_docs(&es);
    println!(
        "  {name}: client statuses {:?}, client-accepted {}, docs in ES {docs} ({distinct} distinct)",
        l.statuses, l.accepted
    );
    assert_eq!(l.accepted, id.accepted);
    assert!(
        l.statuses.get(&503).copied().unwrap_or(0) > 0,
        "the outage reached the clients as 503 queue full"
    );
    assert!(srv.shutdown().await);
    (id, l, distinct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_30s_within_the_retry_budget_loses_nothing() {
    let (id, _, distinct) = down_for_30s("ES down 30s, retry budget 90s", "90s").await;
    assert_eq!(id.failed, 0, "{id:?}");
    // indexed also counts aggregated metrics harvested during the run
    assert_eq!(distinct, id.indexed - id.produced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_30s_past_the_retry_budget_counts_failures() {
    let (id, _, distinct) = down_for_30s("ES down 30s, retry budget 5s", "5s").await;
    assert!(
        id.failed_by.get("retries_exhausted").copied().unwrap_or(0) > 0,
        "{id:?}"
    );
    assert_eq!(id.failed, id.failed_by["retries_exhausted"], "{id:?}");
    assert!(distinct >= id.indexed - id.produced);
}

/// Runs the real binary against `es`, loads it, sends SIGTERM after
/// `load_for`, and returns (exit status, identity from the shutdown line,
/// client view, time from SIGTERM to exit).
async fn sigterm_binary(
    es: &EsDouble,
    extra: &[&str],
    load_for: Duration,
) -> (std::process::ExitStatus, Identity, Load, Duration) {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut args = vec![
        format!("apm-server.host=127.0.0.1:{port}"),
        format!("output.elasticsearch.hosts=[\"{}\"]", es.host()),
        "output.elasticsearch.flush_interval=50ms".into(),
        "output.elasticsearch.backoff.init=50ms".into(),
        "output.elasticsearch.backoff.max=500ms".into(),
        "logging.level=info".into(),
        "logging.format=json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_apm-rs"));
    for a in &args {
        cmd.args(["-E", a]);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start apm-rs");
    // Collect both streams; the shutdown line is in one of them.
    let mut readers = Vec::new();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for stream in [out, err] {
        readers.push(std::thread::spawn(move || {
            std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        }));
    }
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while reqwest::get(format!("{base}/")).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "apm-rs did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move { load(&base, "sigterm", 4, 100_000, 10, stop).await })
    };
    tokio::time::sleep(load_for).await;
    let killed = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait thread")
        .expect("wait");
    let took = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    let l = loader.await.expect("load");
    let lines: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().expect("reader"))
        .collect();
    let fields = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["fields"]["message"] == "shutdown complete")
        .map(|j| j["fields"].clone())
        .unwrap_or_else(|| panic!("no shutdown line in:\n{}", lines.join("\n")));
    (status, Identity::from_log_fields(&fields), l, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_drains_everything() {
    let es = EsDouble::start();
    let (status, id, l, took) = sigterm_binary(&es, &[], Duration::from_millis(1500)).await;
    id.check("SIGTERM mid-load (real binary)");
    let (docs, distinct) = es_docs(&es);
    println!(
        "  SIGTERM mid-load: exit {status:?} {took:?} after SIGTERM, client statuses {:?}, client-accepted {}, docs in ES {docs}",
        l.statuses, l.accepted
    );
    assert!(status.success(), "exit status {status:?}");
    assert!(id.accepted > 0, "load was accepted before SIGTERM");
    assert!(id.drained(), "{id:?}");
    assert_eq!(id.failed, 0, "{id:?}");
    assert_eq!(
        l.accepted, id.accepted,
        "clients were told of every accepted event"
    );
    // The shutdown harvest adds aggregated metric documents (none failed).
    let events = id.indexed - id.produced;
    assert_eq!(
        (docs, distinct),
        (events, events),
        "every indexed event is in ES once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_elasticsearch_down_counts_what_it_abandons() {
    let es = EsDouble::start();
    es.down_for(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, id, l, took) = sigterm_binary(
        &es,
        &["apm-server.shutdown_timeout=2s"],
        Duration::from_millis(1500),
    )
    .await;
    id.check("SIGTERM with ES down, shutdown_timeout 2s (real binary)");
    println!(
        "  SIGTERM with ES down: exit {status:?} {took:?} after SIGTERM, client statuses {:?}, client-accepted {}",
        l.statuses, l.accepted
    );
    assert!(
        !status.success(),
        "undelivered events make the exit code non-zero"
    );
    assert!(id.failed > 0, "{id:?}");
    assert!(id.drained(), "{id:?}");
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
}

/// Panics injected into every stage kind while normal load runs: the
/// panicking requests get a 500 (stages before the outcome is decided) or
/// their 202 stands (after it), nothing else is affected, and the identity
/// holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_under_load() {
    use apm_rs::pipeline::{topology::EventsHook, PipelineHooks};
    fn boom(tag: &'static str) -> Option<EventsHook> {
        Some(Arc::new(move |evs: &[apm_rs::model::Event]| {
            if evs.iter().any(|e| e.service_name() == tag) {
                panic!("injected test panic ({tag})");
            }
        }))
    }
    let hooks = PipelineHooks {
        after_decode: boom("boom-decoder"),
        before_validate: boom("boom-validator"),
        before_rate: boom("boom-rate"),
        before_sourcemap: boom("boom-sourcemap"),
        before_index: boom("boom-indexer"),
    };
    let es = EsDouble::start();
    let o = es_overrides(&es, &[]);
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    let mut srv = TestServer::start_with(&refs, None, hooks);
    let stop = Arc::new(AtomicBool::new(false));
    let normal = {
        let (url, stop) = (srv.url.clone(), Arc::clone(&stop));
        tokio::spawn(async move { load(&url, "fine", 3, 60, 10, stop).await })
    };
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let kinds = [
        ("decoder", 500),
        ("validator", 500),
        ("rate", 500),
        ("sourcemap", 202),
        ("indexer", 202),
    ];
    let rounds = 4;
    for r in 0..rounds {
        for (k, (stage, want)) in kinds.iter().enumerate() {
            let body = payload(&format!("boom-{stage}"), 100 + k, r, 5);
            let reply = post(&url, body, &[("content-type", "application/x-ndjson")]).await;
            assert_eq!(reply.status, *want, "{stage}: {}", reply.body);
        }
    }
    let l = normal.await.expect("load");
    assert_eq!(
        l.statuses.keys().copied().collect::<Vec<_>>(),
        vec![202],
        "other requests are unaffected: {:?}",
        l.statuses
    );
    let id = scrape_until_drained(metrics_addr(&srv), Duration::from_secs(30)).await;
    id.check("panics under load (4 rounds x 5 stages, 5 events each)");
    let t = srv.telemetry();
    // Stages before the outcome restart their instance; the sourcemap and
    // indexer stages catch the panic per event (retry once, dead letter).
    for (stage, _) in kinds {
        let restarts = if matches!(stage, "sourcemap" | "indexer") {
            0
        } else {
            rounds as u64
        };
        assert_eq!(
            t.stage_panics.with_label_values(&[stage]).get(),
            restarts,
            "{stage}"
        );
    }
    // Three stages before the outcome: rejected (internal); two after:
    // every event panics twice and is dead-lettered.
    assert_eq!(
        id.rejected_by.get("internal"),
        Some(&(3 * rounds as u64 * 5))
    );
    assert_eq!(
        id.failed_by.get("dead_letter"),
        Some(&(2 * rounds as u64 * 5))
    );
    assert_eq!(srv.dead_letters().len(), 2 * rounds * 5);
    let events = id.indexed - id.produced;
    assert_eq!(events, l.accepted, "{id:?}");
    let (docs, distinct) = es_docs(&es);
    assert_eq!((docs, distinct), (events, events));
    assert!(srv.shutdown().await);
}
