//! The disk queue through the real server: Elasticsearch (the double) down
//! longer than the retry budget, `kill -9` of the binary mid-load, a torn
//! and a corrupted record, a full queue and a full disk, bulk timeouts.
//! Every test checks that each event answered 202 ends in Elasticsearch
//! exactly once (by its error id) and that the counters add up.
//!
//! Run: `cargo test --test durability -- --nocapture`.

mod common;
use common::*;
use es_double::{EsDouble, Faults};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

const ERRORS_INDEX: &str = "logs-apm.error-default";

/// A request of `n` error events whose ids encode (`worker`, `request`, `i`).
fn payload(worker: usize, request: usize, n: usize) -> Vec<u8> {
    let mut s = String::from(
        "{\"metadata\":{\"service\":{\"name\":\"durable\",\"agent\":{\"name\":\"python\",\"version\":\"1.0.0\"}}}}\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "{{\"error\":{{\"id\":\"{}\",\"exception\":{{\"message\":\"m {i}\",\"type\":\"E\"}}}}}}\n",
            event_id(worker, request, i)
        ));
    }
    s.into_bytes()
}

fn event_id(worker: usize, request: usize, i: usize) -> String {
    format!(
        "{:016x}",
        ((worker as u64) << 40) | ((request as u64) << 16) | i as u64
    )
}

/// What the clients saw: statuses, and the ids of events answered 202.
#[derive(Debug, Default)]
struct Sent {
    statuses: BTreeMap<u16, u64>,
    accepted: HashSet<String>,
    /// Longest time a 503 took to come back.
    slowest_503: Duration,
    bodies_503: Vec<String>,
}

/// `workers` clients sending `requests` requests of `events` events each,
/// until `stop` returns true.
async fn load(
    url: &str,
    workers: usize,
    requests: usize,
    events: usize,
    stop: impl Fn(&Sent) -> bool + Send + Sync + Clone + 'static,
) -> Sent {
    let url = format!("{url}/intake/v2/events");
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut out = Sent::default();
            for r in 0..requests {
                if stop(&out) {
                    break;
                }
                let t = Instant::now();
                let res = c
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(payload(w, r, events))
                    .send()
                    .await;
                let status = match res {
                    Ok(resp) => {
                        let s = resp.status().as_u16();
                        let body = resp.text().await.unwrap_or_default();
                        if s == 202 {
                            out.accepted.extend((0..events).map(|i| event_id(w, r, i)));
                        }
                        if s == 503 {
                            out.slowest_503 = out.slowest_503.max(t.elapsed());
                            out.bodies_503.push(body);
                        }
                        s
                    }
                    Err(_) => 0,
                };
                *out.statuses.entry(status).or_default() += 1;
                if status == 0 {
                    break;
                }
            }
            out
        }));
    }
    let mut all = Sent::default();
    for t in tasks {
        let o = t.await.expect("load task");
        for (k, v) in o.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.accepted.extend(o.accepted);
        all.slowest_503 = all.slowest_503.max(o.slowest_503);
        all.bodies_503.extend(o.bodies_503);
    }
    all
}

/// Error ids in the double, with how often each was indexed.
fn indexed(es: &EsDouble) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for d in es.docs(ERRORS_INDEX) {
        if let Some(id) = d["error"]["id"].as_str() {
            *m.entry(id.to_string()).or_default() += 1;
        }
    }
    m
}

/// Waits until every accepted id is in the double, then asserts each is
/// there exactly once (and nothing else is).
async fn assert_exactly_once(es: &EsDouble, accepted: &HashSet<String>, within: Duration) {
    let t0 = Instant::now();
    loop {
        let got = indexed(es);
        let missing = accepted.iter().filter(|id| !got.contains_key(*id)).count();
        if missing == 0 || t0.elapsed() > within {
            let dups: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
            assert_eq!(missing, 0, "accepted events missing from Elasticsearch");
            assert!(
                dups.is_empty(),
                "duplicates: {} e.g. {:?}",
                dups.len(),
                dups.first()
            );
            let extra = got.keys().filter(|id| !accepted.contains(*id)).count();
            assert_eq!(extra, 0, "events indexed that were never answered 202");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A metric's value from the server's registry (sum over labels).
fn metric(srv: &TestServer, name: &str) -> u64 {
    metric_of(srv.telemetry(), name)
}

/// A metric's value from a registry (sum over labels).
fn metric_of(t: &apm_rs::telemetry::Telemetry, name: &str) -> u64 {
    t.render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

fn disk_queue(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut o = vec![
        "queue.type=disk".to_string(),
        format!("queue.disk.path={}", dir.display()),
        "output.elasticsearch.flush_bytes=32KiB".to_string(),
        // A loaded CI machine must not turn slow syncs into 503s.
        "pipeline.queue_wait=10s".to_string(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

fn start(es: &EsDouble, opts: &[String]) -> TestServer {
    // These tests count event documents: the server's own aggregated metrics
    // (tests/aggregation.rs) are switched off so they do not mix in.
    let mut refs: Vec<&str> = vec!["pipeline.aggregator.enabled=false"];
    refs.extend(opts.iter().map(String::as_str));
    start_with_es(&es.host(), &refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_retry_budget_loses_and_duplicates_nothing() {
    let es = EsDouble::start();
    let q = tempfile::tempdir().expect("tempdir");
    // backoff.max 500ms: the memory queue's retry budget would be 2.5 s.
    let srv = start(&es, &disk_queue(q.path(), &[]));
    es.down_for(Duration::from_secs(8));
    let t0 = Instant::now();
    let sent = load(&srv.url, 4, 25, 100, |_| false).await;
    println!(
        "10,000 events sent in {:?} with ES down: {:?}",
        t0.elapsed(),
        sent.statuses
    );
    assert_eq!(sent.accepted.len(), 10_000, "{:?}", sent.statuses);
    assert!(
        metric(&srv, "apm_rs_queue_events") > 0,
        "events wait in the disk queue"
    );
    assert_exactly_once(&es, &sent.accepted, Duration::from_secs(60)).await;
    let a = srv.telemetry().accounting();
    assert_eq!(a.failed, 0, "{a:?}");
    assert_eq!(a.indexed, 10_000, "{a:?}");
    let t1 = Instant::now();
    while metric(&srv, "apm_rs_queue_events") > 0 && t1.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&srv, "apm_rs_queue_events"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_timeouts_make_no_duplicates_with_either_queue() {
    for disk in [true, false] {
        let es = EsDouble::start();
        es.set_faults(Faults {
            bulk_response_delay_ms: 600,
            ..Faults::default()
        });
        let q = tempfile::tempdir().expect("tempdir");
        let mut opts = vec![
            "output.elasticsearch.timeout=400ms".to_string(),
            "pipeline.queue_wait=10s".to_string(),
        ];
        if disk {
            opts.extend(disk_queue(q.path(), &[]));
        }
        let srv = start(&es, &opts);
        let url = srv.url.clone();
        let loader = tokio::spawn(async move { load(&url, 4, 40, 10, |_| false).await });
        // Every bulk times out for 3 s (each is indexed, its answer lost), then answers come in time.
        tokio::time::sleep(Duration::from_secs(3)).await;
        es.clear_faults();
        let sent = loader.await.expect("load");
        assert_eq!(sent.accepted.len(), 1_600, "{:?}", sent.statuses);
        assert_exactly_once(&es, &sent.accepted, Duration::from_secs(60)).await;
        println!("disk={disk}: {} bulks for 1,600 events", es.bulk_requests());
        assert!(es.bulk_requests() > 1);
    }
}

/// SIGTERM's deadline passes while bulks are still waiting for their
/// answers: what was abandoned stays queued and is not also counted failed,
/// records answered behind one still in flight are not delivered again, and
/// the next run replays exactly what was queued; every event is in
/// Elasticsearch once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_deadline_with_bulks_in_flight_counts_each_event_once_across_the_restart() {
    let es = EsDouble::start();
    let q = tempfile::tempdir().expect("tempdir");
    let opts = disk_queue(q.path(), &["apm-server.shutdown_timeout=1s"]);
    let mut srv = start(&es, &opts);
    let sent = load(&srv.url, 4, 10, 10, |_| false).await;
    assert_eq!(sent.accepted.len(), 400, "{:?}", sent.statuses);
    // Answers are now held back past the deadline: the bulks in flight and
    // those still to send are abandoned.
    es.set_faults(Faults {
        bulk_response_delay_ms: 5_000,
        ..Faults::default()
    });
    let first = std::sync::Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    srv.shutdown().await;
    let a = first.accounting();
    let queued = metric_of(&first, "apm_rs_queue_events");
    println!("first run: {a:?}, queued {queued}");
    assert!(a.balanced(), "{a:?}");
    assert!(queued > 0, "the test needs bulks in flight at the deadline");
    assert_eq!(
        a.failed, 0,
        "abandoned events stay queued, not failed: {a:?}"
    );
    // Exact but for one case (docs/durability.md): a record whose documents
    // were split over two bulks, one answered and one abandoned, stays
    // queued whole, so its answered documents are counted indexed in both
    // runs. That excess is at most one bulk's worth of such records.
    let excess = (a.indexed + a.discarded + queued).saturating_sub(a.accepted);
    assert!(
        a.indexed + a.discarded + queued >= a.accepted && excess < 100,
        "accepted = indexed + failed + queued: {a:?}, queued {queued}"
    );

    es.clear_faults();
    let srv = start(&es, &opts);
    assert_eq!(metric(&srv, "apm_rs_queue_replayed_events_total"), queued);
    let t0 = Instant::now();
    while metric(&srv, "apm_rs_queue_events") > 0 || srv.telemetry().accounting().indexed < queued {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "replay did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = srv.telemetry().accounting();
    println!("second run: {b:?}");
    assert_eq!((b.indexed, b.failed), (queued, 0), "{b:?}");
    assert_eq!(a.indexed + b.indexed, 400 + excess);
    assert_exactly_once(&es, &sent.accepted, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_within_queue_wait_and_loses_nothing() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(503),
        ..Faults::default()
    });
    let q = tempfile::tempdir().expect("tempdir");
    let srv = start(
        &es,
        &disk_queue(
            q.path(),
            &["queue.disk.max_size=64KiB", "pipeline.queue_wait=300ms"],
        ),
    );
    let sent = load(&srv.url, 2, 200, 10, |s| s.statuses.contains_key(&503)).await;
    assert!(sent.statuses.contains_key(&503), "{:?}", sent.statuses);
    assert!(
        sent.slowest_503 < Duration::from_millis(300 + 1500),
        "503 after {:?}",
        sent.slowest_503
    );
    assert!(
        sent.bodies_503.iter().all(|b| b.contains("queue is full")),
        "{:?}",
        sent.bodies_503
    );
    assert!(metric(&srv, "apm_rs_queue_disk_bytes") <= 64 * 1024);
    es.clear_faults();
    assert_exactly_once(&es, &sent.accepted, Duration::from_secs(30)).await;
    let a = srv.telemetry().accounting();
    assert_eq!(a.received, a.rejected + a.accepted, "{a:?}");
    assert_eq!(a.failed, 0, "{a:?}");
}

/// Mounts a tmpfs of `size` at `dir`; `false` when this host does not allow it.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount<'a>(&'a Path);
impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_and_loses_nothing() {
    let q = tempfile::tempdir().expect("tempdir");
    if !mount_tmpfs(q.path(), "1m") {
        eprintln!("\n*** SKIPPED a_full_disk_is_a_503_and_loses_nothing: cannot mount a tmpfs (needs root) ***\n");
        return;
    }
    let _unmount = Unmount(q.path());
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(503),
        ..Faults::default()
    });
    let srv = start(
        &es,
        &disk_queue(
            q.path(),
            &[
                "queue.disk.max_size=100MiB",
                "queue.disk.segment_size=256KiB",
            ],
        ),
    );
    let sent = load(&srv.url, 2, 2_000, 10, |s| s.statuses.contains_key(&503)).await;
    assert!(sent.statuses.contains_key(&503), "{:?}", sent.statuses);
    assert!(
        sent.bodies_503.iter().all(|b| b.contains("queue is full")),
        "{:?}",
        sent.bodies_503
    );
    assert!(metric(&srv, "apm_rs_queue_write_errors_total") > 0);
    es.clear_faults();
    assert_exactly_once(&es, &sent.accepted, Duration::from_secs(30)).await;
    // Room again: the same server accepts more.
    let more = load(&srv.url, 1, 5, 10, |_| false).await;
    assert_eq!(more.accepted.len(), 50, "{:?}", more.statuses);
}

/// The byte ranges of the records of a segment file (parsed from the
/// documented layout: u32 payload length, then 16 more header bytes).
fn records(path: &Path) -> Vec<(usize, usize)> {
    let b = std::fs::read(path).expect("segment");
    let mut out = Vec::new();
    let mut at = 0;
    while at + 20 <= b.len() {
        let len = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        out.push((at, at + 20 + len));
        at += 20 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_record_and_a_corrupt_middle_record_are_skipped_counted_and_the_rest_delivered()
{
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(503),
        ..Faults::default()
    });
    let q = tempfile::tempdir().expect("tempdir");
    let opts = disk_queue(q.path(), &["apm-server.shutdown_timeout=1s"]);
    let mut srv = start(&es, &opts);
    let sent = load(&srv.url, 1, 20, 5, |_| false).await;
    assert_eq!(sent.accepted.len(), 100);
    srv.shutdown().await;
    assert_eq!(es.doc_count(), 0);

    let mut segs: Vec<_> = std::fs::read_dir(q.path())
        .expect("queue dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "seg") && p.metadata().is_ok_and(|m| m.len() > 0)
        })
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let seg = &segs[0];
    let recs = records(seg);
    assert_eq!(recs.len(), 20);
    let mut bytes = std::fs::read(seg).expect("segment");
    let (middle, _) = recs[10];
    bytes[middle + 40] ^= 0xff;
    bytes.truncate(bytes.len() - 5);
    std::fs::write(seg, &bytes).expect("write segment");
    // The events of the two damaged records (request 10 and 19, 5 each).
    let lost: HashSet<String> = [10, 19]
        .iter()
        .flat_map(|&r| (0..5).map(move |i| event_id(0, r, i)))
        .collect();

    es.clear_faults();
    let srv = start(&es, &opts);
    assert_eq!(metric(&srv, "apm_rs_queue_corrupt_regions_total"), 1);
    assert!(metric(&srv, "apm_rs_queue_unreadable_bytes_total") > 0);
    assert_eq!(metric(&srv, "apm_rs_queue_replayed_events_total"), 90);
    let expected: HashSet<String> = sent.accepted.difference(&lost).cloned().collect();
    assert_exactly_once(&es, &expected, Duration::from_secs(30)).await;
}

/// Runs the binary with `args`; returns the child and its base URL.
async fn spawn_binary(args: &[String]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_apm-rs"));
    cmd.args(["-E", &format!("apm-server.host=127.0.0.1:{port}")]);
    for a in args {
        cmd.args(["-E", a]);
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start apm-rs");
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while reqwest::get(format!("{base}/")).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "apm-rs did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_then_restart_indexes_every_accepted_event_exactly_once() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let q = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        format!("output.elasticsearch.hosts=[\"{}\"]", es.host()),
        "output.elasticsearch.flush_interval=50ms".to_string(),
    ];
    args.extend(disk_queue(q.path(), &[]));
    let (mut child, base) = spawn_binary(&args).await;
    let loader = tokio::spawn(async move { load(&base, 4, 100_000, 10, |_| false).await });
    tokio::time::sleep(Duration::from_millis(2000)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let sent = loader.await.expect("load");
    let before = indexed(&es).len();
    println!(
        "killed with {} events answered 202, {before} indexed; statuses {:?}",
        sent.accepted.len(),
        sent.statuses
    );
    assert!(sent.accepted.len() > before, "the kill left events queued");

    es.clear_faults();
    let (mut child, _) = spawn_binary(&args).await;
    // Events of requests cut by the kill may be in the log without a 202:
    // they are delivered too (at least once), but never twice.
    let t0 = Instant::now();
    loop {
        let got = indexed(&es);
        let missing = sent
            .accepted
            .iter()
            .filter(|id| !got.contains_key(*id))
            .count();
        if missing == 0 || t0.elapsed() > Duration::from_secs(60) {
            assert_eq!(missing, 0, "accepted events missing after the restart");
            let dups = got.values().filter(|n| **n > 1).count();
            assert_eq!(dups, 0, "duplicates after replay");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().expect("stop");
    child.wait().expect("wait");
}
