//! The Elasticsearch output driven through its real `OutputFactory` against
//! the in-process Elasticsearch double, one test per fault mode.
//!
//! Every test checks the accounting identity: documents appended = indexed +
//! counted failures, every ack released (memory budget back to 0), retries
//! bounded, and duplicates only where the delivery guarantee allows them
//! (docs/elasticsearch.md).

use apm_rs::budget::MemoryBudget;
use apm_rs::config::from_overrides;
use apm_rs::output::elasticsearch::{ElasticsearchFactory, EsSettings};
use apm_rs::output::{Ack, OutputFactory};
use apm_rs::telemetry::{fail, Telemetry};
use es_double::{EsDouble, Faults};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const INDEX: &str = "traces-apm-default";

struct Rig {
    factory: Arc<dyn OutputFactory>,
    telemetry: Arc<Telemetry>,
    budget: Arc<MemoryBudget>,
}

fn overrides(es: &EsDouble, extra: &[&str]) -> Vec<String> {
    let mut o = vec![
        format!("output.elasticsearch.hosts=[\"{}\"]", es.host()),
        "output.elasticsearch.backoff.init=5ms".to_string(),
        "output.elasticsearch.backoff.max=40ms".to_string(),
        "output.elasticsearch.flush_bytes=24kib".to_string(),
        "output.elasticsearch.flush_interval=50ms".to_string(),
        "output.elasticsearch.timeout=5s".to_string(),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

fn settings(es: &EsDouble, extra: &[&str]) -> EsSettings {
    let cfg = from_overrides(overrides(es, extra)).expect("config");
    EsSettings::from_config(cfg.output.elasticsearch.as_ref().expect("es section"))
        .expect("settings")
}

fn rig(es: &EsDouble, extra: &[&str]) -> Rig {
    let cfg = from_overrides(overrides(es, extra)).expect("config");
    let factory = apm_rs::output::from_config(&cfg).expect("factory");
    Rig {
        factory,
        telemetry: Arc::new(Telemetry::new()),
        budget: MemoryBudget::new(1 << 30),
    }
}

fn rig_with(s: EsSettings) -> Rig {
    Rig {
        factory: Arc::new(ElasticsearchFactory::new(s).expect("factory")),
        telemetry: Arc::new(Telemetry::new()),
        budget: MemoryBudget::new(1 << 30),
    }
}

fn doc(i: usize) -> Vec<u8> {
    format!(
        "{{\"create\":{{\"_index\":\"{INDEX}\"}}}}\n{{\"n\":{i},\"message\":\"{}\"}}\n",
        "x".repeat(400)
    )
    .into_bytes()
}

impl Rig {
    fn ack(&self) -> Ack {
        Arc::new(self.budget.try_acquire(100).expect("budget"))
    }

    /// Appends `n` documents numbered from `from` through one instance, then closes it.
    fn send(&self, from: usize, n: usize, close_within: Duration) -> u64 {
        let mut out = self
            .factory
            .build(0, Arc::clone(&self.telemetry))
            .expect("build");
        for i in from..from + n {
            out.append(&doc(i), self.ack());
        }
        out.tick();
        out.close(Instant::now() + close_within).undelivered
    }

    fn indexed(&self) -> u64 {
        self.telemetry.events_indexed.get()
    }

    fn failed(&self, reason: &str) -> u64 {
        self.telemetry
            .events_failed
            .with_label_values(&[reason])
            .get()
    }

    fn failed_total(&self) -> u64 {
        self.telemetry.accounting().failed
    }

    /// appended = indexed + failed, and every ack was released.
    fn assert_balanced(&self, appended: u64) {
        assert_eq!(
            self.indexed() + self.failed_total(),
            appended,
            "indexed {} + failed {} != appended {appended}",
            self.indexed(),
            self.failed_total()
        );
        assert_eq!(self.budget.in_use(), 0, "acks not released");
    }
}

/// Occurrences of each document number in the double.
fn copies(es: &EsDouble) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for d in es.docs(INDEX) {
        if let Some(n) = d.get("n").and_then(Value::as_u64) {
            *m.entry(n).or_default() += 1;
        }
    }
    m
}

fn assert_no_duplicates(es: &EsDouble) {
    let dup: Vec<_> = copies(es).into_iter().filter(|(_, c)| *c > 1).collect();
    assert!(dup.is_empty(), "duplicated documents: {dup:?}");
}

#[test]
fn happy_path_gzip_filter_path_headers() {
    let es = EsDouble::start();
    let r = rig(
        &es,
        &[
            "output.elasticsearch.api_key=myid:mykey",
            "output.elasticsearch.headers={X-Custom: yes}",
        ],
    );
    assert_eq!(r.send(0, 500, Duration::from_secs(10)), 0);
    r.assert_balanced(500);
    assert_eq!(r.indexed(), 500);
    assert_eq!(es.doc_count(), 500);
    assert_no_duplicates(&es);
    let log = es.bulk_log();
    assert!(
        log.len() >= 5,
        "expected several bulks by flush_bytes, got {}",
        log.len()
    );
    for b in &log {
        assert_eq!(
            b.query,
            "require_data_stream=true&filter_path=items.*._index,items.*.status,items.*.failure_store,items.*.error.type,items.*.error.reason&include_source_on_error=false"
        );
        assert!(b.gzip);
        assert_eq!(b.content_type, "application/json");
        assert_eq!(b.authorization.as_deref(), Some("ApiKey bXlpZDpteWtleQ=="));
        assert_eq!(
            b.headers
                .get("x-elastic-product-origin")
                .map(String::as_str),
            Some("observability")
        );
        assert_eq!(b.headers.get("x-custom").map(String::as_str), Some("yes"));
        assert!(b
            .headers
            .get("user-agent")
            .is_some_and(|u| u.starts_with("Elastic-APM-Server/")));
    }
}

#[test]
fn basic_auth_and_no_compression() {
    let es = EsDouble::start();
    let r = rig(
        &es,
        &[
            "output.elasticsearch.username=elastic",
            "output.elasticsearch.password=changeme",
            "output.elasticsearch.compression_level=0",
            "output.elasticsearch.flush_bytes=4kib",
        ],
    );
    assert_eq!(r.send(0, 50, Duration::from_secs(10)), 0);
    r.assert_balanced(50);
    assert_eq!(es.doc_count(), 50);
    let log = es.bulk_log();
    assert!(log.len() >= 5);
    assert!(log
        .iter()
        .all(|b| !b.gzip && b.authorization.as_deref() == Some("Basic ZWxhc3RpYzpjaGFuZ2VtZQ==")));
}

#[test]
fn flush_interval_sends_partial_bulk() {
    let es = EsDouble::start();
    let r = rig(&es, &[]);
    let mut out = r.factory.build(0, Arc::clone(&r.telemetry)).expect("build");
    out.append(&doc(1), r.ack());
    let t = Instant::now();
    while r.indexed() < 1 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(r.factory.flush_interval());
        out.tick();
    }
    assert_eq!(r.indexed(), 1);
    assert_eq!(
        out.close(Instant::now() + Duration::from_secs(1))
            .undelivered,
        0
    );
    r.assert_balanced(1);
}

#[test]
fn item_429_retried_until_indexed() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        item_429_fraction: 0.3,
        item_fault_limit: Some(120),
        ..Default::default()
    });
    let r = rig(&es, &["output.elasticsearch.max_retries=5"]);
    assert_eq!(r.send(0, 400, Duration::from_secs(20)), 0);
    r.assert_balanced(400);
    assert_eq!(r.indexed(), 400, "every 429'd document indexed on a resend");
    assert_eq!(es.doc_count(), 400);
    assert_no_duplicates(&es);
}

#[test]
fn item_429_forever_exhausts_retries() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        item_429_fraction: 1.0,
        ..Default::default()
    });
    let r = rig(&es, &["output.elasticsearch.max_retries=2"]);
    assert_eq!(r.send(0, 100, Duration::from_secs(20)), 0);
    r.assert_balanced(100);
    assert_eq!(r.failed(fail::RETRIES_EXHAUSTED), 100);
    assert_eq!(es.doc_count(), 0);
    // bounded: each document sent at most 1 + max_retries times
    let items: usize = es.bulk_log().iter().map(|b| b.items).sum();
    assert_eq!(items, 300);
}

#[test]
fn item_4xx_rejected_and_counted() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        item_reject_fraction: 0.1,
        ..Default::default()
    });
    let r = rig(&es, &[]);
    assert_eq!(r.send(0, 300, Duration::from_secs(10)), 0);
    r.assert_balanced(300);
    assert_eq!(r.failed(fail::REJECTED), 30);
    assert_eq!(r.indexed(), 270);
    assert_eq!(es.doc_count(), 270);
    assert_eq!(
        es.bulk_log().iter().map(|b| b.items).sum::<usize>(),
        300,
        "4xx items are not resent"
    );
}

fn whole_request_fault(status: u16) {
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(status),
        request_fault_limit: Some(4),
        ..Default::default()
    });
    let r = rig(&es, &[]);
    assert_eq!(r.send(0, 300, Duration::from_secs(20)), 0);
    r.assert_balanced(300);
    assert_eq!(r.indexed(), 300);
    assert_eq!(es.doc_count(), 300);
    assert_no_duplicates(&es);
    assert!(es.bulk_log().iter().filter(|b| b.status == status).count() == 4);
}

#[test]
fn whole_request_429_retried() {
    whole_request_fault(429);
}

#[test]
fn whole_request_500_retried() {
    whole_request_fault(500);
}

#[test]
fn whole_request_503_retried() {
    whole_request_fault(503);
}

#[test]
fn whole_request_400_fails_without_retry() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(400),
        request_fault_limit: Some(1),
        ..Default::default()
    });
    let r = rig(&es, &[]);
    assert_eq!(r.send(0, 10, Duration::from_secs(10)), 0);
    r.assert_balanced(10);
    assert_eq!(r.failed(fail::REJECTED), 10);
    assert_eq!(es.bulk_requests(), 1);
}

#[test]
fn persistent_5xx_spends_retry_budget() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(503),
        ..Default::default()
    });
    // backoff.max 40ms → budget 200ms; at least max_retries=3 attempts
    let r = rig(&es, &["output.elasticsearch.max_retries=3"]);
    let t = Instant::now();
    assert_eq!(r.send(0, 20, Duration::from_secs(20)), 0);
    r.assert_balanced(20);
    assert_eq!(r.failed(fail::RETRIES_EXHAUSTED), 20);
    assert!(t.elapsed() < Duration::from_secs(10));
    let n = es.bulk_requests();
    assert!((4..=40).contains(&n), "retries bounded, got {n} requests");
}

#[test]
fn dropped_connection_retried_duplicates_allowed() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        drop_connection: true,
        request_fault_limit: Some(2),
        ..Default::default()
    });
    let r = rig(&es, &["output.elasticsearch.idempotent_ids=false"]);
    assert_eq!(r.send(0, 200, Duration::from_secs(20)), 0);
    r.assert_balanced(200);
    assert_eq!(r.indexed(), 200);
    let c = copies(&es);
    assert_eq!(c.len(), 200, "every document indexed");
    // at-least-once: the bulks whose answer was lost were indexed twice
    let extra: usize = c.values().map(|n| n - 1).sum();
    assert!(
        extra > 0 && extra <= 2 * 60,
        "duplicates only from the 2 dropped bulks, got {extra}"
    );
}

#[test]
fn dropped_connection_with_idempotent_ids_no_duplicates() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        drop_connection: true,
        request_fault_limit: Some(2),
        ..Default::default()
    });
    let mut s = settings(&es, &[]);
    s.idempotent_ids = true;
    let r = rig_with(s);
    assert_eq!(r.send(0, 200, Duration::from_secs(20)), 0);
    r.assert_balanced(200);
    assert_eq!(r.indexed(), 200);
    assert_eq!(es.doc_count(), 200);
    assert_no_duplicates(&es);
}

#[test]
fn down_then_back_nothing_lost_and_ready_follows() {
    let es = EsDouble::start();
    // retry budget 5 × 600ms = 3s > the 1.5s outage
    let mut s = settings(&es, &["output.elasticsearch.backoff.max=600ms"]);
    s.ready_check_interval = Duration::from_millis(100);
    let r = rig_with(s);
    let t = Instant::now();
    while !r.factory.ready() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(r.factory.ready());
    es.down_for(Duration::from_millis(1500));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    while r.factory.ready() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!r.factory.ready(), "ready() turns false while ES is down");
    assert_eq!(r.send(0, 100, Duration::from_secs(20)), 0);
    r.assert_balanced(100);
    assert_eq!(r.indexed(), 100);
    assert_eq!(es.doc_count(), 100);
    assert_no_duplicates(&es);
    assert!(
        r.factory.ready() || {
            std::thread::sleep(Duration::from_millis(500));
            r.factory.ready()
        }
    );
}

#[test]
fn start_without_elasticsearch() {
    // a port nobody listens on
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = from_overrides([format!("output.elasticsearch.hosts=[\"127.0.0.1:{port}\"]")])
        .expect("config");
    let f = apm_rs::output::from_config(&cfg).expect("start-up does not need ES");
    let _out = f.build(0, Arc::new(Telemetry::new())).expect("build");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!f.ready());
}

#[test]
fn failed_host_is_skipped() {
    let es = EsDouble::start();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let r = rig(
        &es,
        &[&format!(
            "output.elasticsearch.hosts=[\"{dead}\", \"{}\"]",
            es.host()
        )],
    );
    assert_eq!(r.send(0, 300, Duration::from_secs(20)), 0);
    r.assert_balanced(300);
    assert_eq!(es.doc_count(), 300);
    assert_no_duplicates(&es);
}

#[test]
fn latency_makes_append_block_at_max_requests() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        latency_ms: 1500,
        ..Default::default()
    });
    let cfg =
        from_overrides(overrides(&es, &["output.elasticsearch.max_requests=1"])).expect("cfg");
    let es_settings =
        EsSettings::from_config(cfg.output.elasticsearch.as_ref().expect("es")).expect("s");
    let factory = Arc::new(ElasticsearchFactory::new(es_settings).expect("factory"));
    let telemetry = Arc::new(Telemetry::new());
    let budget = MemoryBudget::new(1 << 30);
    // Two instances share the single slot.
    let mut a = factory.build(0, Arc::clone(&telemetry)).expect("a");
    let mut b = factory.build(1, Arc::clone(&telemetry)).expect("b");
    let ack = || -> Ack { Arc::new(budget.try_acquire(100).expect("budget")) };
    // ~60 docs of ~450 bytes fill 24 KiB: a's first flush takes the only slot
    for i in 0..60 {
        a.append(&doc(i), ack());
    }
    assert_eq!(factory.free_slots(), 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let budget2 = Arc::clone(&budget);
    let h = std::thread::spawn(move || {
        for i in 1000..1060 {
            b.append(&doc(i), Arc::new(budget2.try_acquire(100).expect("budget")));
        }
        tx.send(Instant::now()).expect("send");
        b.close(Instant::now() + Duration::from_secs(10))
    });
    // b's flush must wait for a's bulk (1.5 s latency)
    assert!(
        rx.recv_timeout(Duration::from_millis(700)).is_err(),
        "append did not block while all max_requests were in flight"
    );
    let unblocked = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("append unblocks");
    let _ = unblocked;
    assert_eq!(h.join().expect("join").undelivered, 0);
    assert_eq!(
        a.close(Instant::now() + Duration::from_secs(10))
            .undelivered,
        0
    );
    assert_eq!(telemetry.events_indexed.get(), 120);
    assert_eq!(budget.in_use(), 0);
    assert!(telemetry
        .render()
        .contains("apm_rs_output_es_slot_wait_nanoseconds_total"));
}

#[test]
fn close_deadline_counts_undelivered_as_shutdown() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(503),
        ..Default::default()
    });
    // long budget: the bulk is still retrying at the deadline
    let r = rig(&es, &["output.elasticsearch.backoff.max=10s"]);
    let t = Instant::now();
    let undelivered = r.send(0, 100, Duration::from_millis(500));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "close respects its deadline"
    );
    assert_eq!(undelivered, 100);
    assert_eq!(r.failed(fail::SHUTDOWN), 100);
    r.assert_balanced(100);
}

#[test]
fn close_flushes_pending_buffer() {
    let es = EsDouble::start();
    let r = rig(&es, &["output.elasticsearch.flush_interval=1h"]);
    assert_eq!(r.send(0, 7, Duration::from_secs(5)), 0);
    assert_eq!(es.doc_count(), 7);
    r.assert_balanced(7);
}

#[test]
fn no_openssl_or_native_tls_in_dependency_tree() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--workspace",
            "--prefix",
            "none",
            "-e",
            "normal,build",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for bad in ["openssl", "native-tls", "openssl-sys"] {
        assert!(
            !tree.lines().any(|l| l.starts_with(&format!("{bad} "))),
            "{bad} is in the dependency tree"
        );
    }
}

/// Cost of idempotent ids (deterministic `_id` per document), measured, not
/// asserted. Run: `cargo test --test es_output -- --ignored --nocapture measure_idempotent_ids_cost`
#[test]
#[ignore]
fn measure_idempotent_ids_cost() {
    use apm_rs::output::elasticsearch::request_builder::BulkBuffer;
    // an agent-like document: the approved error document, made unique per event
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/corpus/approvals/TestErrorIngest.approved.json"
    ))
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    .and_then(|v| v.get(0).cloned())
    .unwrap_or_else(|| serde_json::json!({"message": "x".repeat(1500)}));
    let docs: Vec<Vec<u8>> = (0..20_000u64)
        .map(|i| {
            let mut d = template.clone();
            d["trace.id"] =
                serde_json::json!(format!("{:032x}", i.wrapping_mul(0x9E3779B97F4A7C15)));
            d["event.sequence"] = serde_json::json!(i);
            let mut line = format!("{{\"create\":{{\"_index\":\"{INDEX}\"}}}}\n").into_bytes();
            line.extend(serde_json::to_vec(&d).expect("json"));
            line.push(b'\n');
            line
        })
        .collect();
    let raw: usize = docs.iter().map(Vec::len).sum();
    let budget = MemoryBudget::new(1 << 30);
    for ids in [false, true] {
        let t = Instant::now();
        let mut buf = BulkBuffer::new(5, 1 << 20, ids);
        let (mut gz, mut uncompressed) = (0usize, 0usize);
        for d in &docs {
            let ack = Arc::new(budget.try_acquire(1).expect("budget"));
            if buf.push(d, ack).is_err() {
                panic!("push");
            }
            if buf.raw_len() >= 1 << 20 {
                uncompressed += buf.raw_len();
                gz += buf.take().ok().flatten().map_or(0, |b| b.bytes.len());
            }
        }
        uncompressed += buf.raw_len();
        gz += buf.take().ok().flatten().map_or(0, |b| b.bytes.len());
        let el = t.elapsed();
        println!(
            "idempotent_ids={ids}: {} docs, avg doc {} B; bulk bytes/doc uncompressed {:.1}, gzip(5) {:.1}; append+gzip {:.2} µs/doc (debug build)",
            docs.len(),
            raw / docs.len(),
            uncompressed as f64 / docs.len() as f64,
            gz as f64 / docs.len() as f64,
            el.as_secs_f64() * 1e6 / docs.len() as f64
        );
    }
}

/// Output throughput into the fast-mode double, measured, not asserted (debug build numbers).
/// Run: `cargo test --test es_output -- --ignored --nocapture measure_output_throughput`
#[test]
#[ignore]
fn measure_output_throughput() {
    let es = EsDouble::start_fast();
    let r = rig(&es, &["output.elasticsearch.flush_bytes=1mib"]);
    let docs: Vec<Vec<u8>> = (0..100_000).map(doc).collect();
    let t = Instant::now();
    let mut out = r.factory.build(0, Arc::clone(&r.telemetry)).expect("build");
    for d in &docs {
        out.append(d, r.ack());
    }
    assert_eq!(
        out.close(Instant::now() + Duration::from_secs(60))
            .undelivered,
        0
    );
    let el = t.elapsed();
    r.assert_balanced(docs.len() as u64);
    assert_eq!(es.doc_count(), docs.len() as u64);
    println!(
        "{} docs of {} B through one output instance into the fast double: {:.0} docs/s, {} bulks",
        docs.len(),
        docs[0].len(),
        docs.len() as f64 / el.as_secs_f64(),
        es.bulk_requests()
    );
}

fn corpus_tls(test: &str) -> Option<std::path::PathBuf> {
    let p = std::env::var_os("APM_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
        })
        .join("tls");
    if p.join("ca.crt.pem").is_file() {
        Some(p)
    } else {
        eprintln!(
            "\n*** SKIPPED {test}: corpus TLS files not found at {} ***\n",
            p.display()
        );
        None
    }
}

fn tls_double(dir: &std::path::Path) -> EsDouble {
    EsDouble::start_with(es_double::Options {
        tls: Some(es_double::TlsFiles {
            certificate: dir.join("certificate.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        }),
        ..Default::default()
    })
    .expect("tls double")
}

/// The corpus certificate is for DNS name `apm-server` (not 127.0.0.1), signed by `ca.crt.pem`.
#[test]
fn tls_with_ca_and_verification_modes() {
    let Some(dir) = corpus_tls("tls_with_ca_and_verification_modes") else {
        return;
    };
    let es = tls_double(&dir);
    let ca = dir.join("ca.crt.pem").display().to_string();
    let host = format!("output.elasticsearch.hosts=[\"https://{}\"]", es.host());

    // trusted CA, host name not checked → delivered over TLS
    let r = rig(
        &es,
        &[
            &host,
            &format!("output.elasticsearch.ssl.certificate_authorities=[\"{ca}\"]"),
            "output.elasticsearch.ssl.verification_mode=certificate",
        ],
    );
    assert_eq!(r.send(0, 30, Duration::from_secs(10)), 0);
    r.assert_balanced(30);
    assert_eq!(r.indexed(), 30);

    // verification off → delivered
    let r = rig(
        &es,
        &[&host, "output.elasticsearch.ssl.verification_mode=none"],
    );
    assert_eq!(r.send(100, 30, Duration::from_secs(10)), 0);
    assert_eq!(r.indexed(), 30);

    // full verification: 127.0.0.1 is not in the certificate → refused, counted failed
    let r = rig(
        &es,
        &[
            &host,
            &format!("output.elasticsearch.ssl.certificate_authorities=[\"{ca}\"]"),
            "output.elasticsearch.max_retries=1",
        ],
    );
    assert_eq!(r.send(200, 10, Duration::from_secs(10)), 0);
    r.assert_balanced(10);
    assert_eq!(r.failed(fail::RETRIES_EXHAUSTED), 10);

    // unknown CA (system roots only) → refused
    let r = rig(&es, &[&host, "output.elasticsearch.max_retries=1"]);
    assert_eq!(r.send(300, 10, Duration::from_secs(10)), 0);
    assert_eq!(r.failed(fail::RETRIES_EXHAUSTED), 10);

    assert_eq!(es.doc_count(), 60);
    assert_no_duplicates(&es);
}

#[test]
fn begin_shutdown_unblocks_appends_waiting_for_a_slot() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        request_status: Some(503),
        ..Default::default()
    });
    // long retry budget: without a shutdown signal, b would wait minutes for the slot
    let s = settings(
        &es,
        &[
            "output.elasticsearch.max_requests=1",
            "output.elasticsearch.backoff.max=60s",
        ],
    );
    let factory = Arc::new(ElasticsearchFactory::new(s).expect("factory"));
    let telemetry = Arc::new(Telemetry::new());
    let budget = MemoryBudget::new(1 << 30);
    let mut a = factory.build(0, Arc::clone(&telemetry)).expect("a");
    for i in 0..60 {
        a.append(&doc(i), Arc::new(budget.try_acquire(100).expect("budget")));
    }
    assert_eq!(
        factory.free_slots(),
        0,
        "a's bulk holds the only slot, retrying"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let budget2 = Arc::clone(&budget);
    let mut b = factory.build(1, Arc::clone(&telemetry)).expect("b");
    let h = std::thread::spawn(move || {
        for i in 1000..1060 {
            b.append(&doc(i), Arc::new(budget2.try_acquire(100).expect("budget")));
        }
        let _ = tx.send(());
        b.close(Instant::now() + Duration::from_secs(1))
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "b is blocked"
    );
    let t = Instant::now();
    factory.begin_shutdown(Instant::now() + Duration::from_millis(300));
    rx.recv_timeout(Duration::from_secs(5))
        .expect("b's append gives up at the deadline");
    let rb = h.join().expect("join");
    let ra = a.close(Instant::now() + Duration::from_secs(1));
    assert!(t.elapsed() < Duration::from_secs(4));
    let a_ = telemetry.accounting();
    assert_eq!(a_.indexed + a_.failed, 120, "{a_:?}");
    assert_eq!(
        telemetry
            .events_failed
            .with_label_values(&[fail::SHUTDOWN])
            .get(),
        120 - a_.indexed
    );
    assert!(ra.undelivered + rb.undelivered >= 60);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn request_timeout_retried_until_fault_clears() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        latency_ms: 800,
        ..Default::default()
    });
    // timeout 300 ms < latency; retry budget 5 × 500 ms outlasts the 1 s fault
    let r = rig(
        &es,
        &[
            "output.elasticsearch.timeout=300ms",
            "output.elasticsearch.backoff.max=500ms",
        ],
    );
    let mut out = r.factory.build(0, Arc::clone(&r.telemetry)).expect("build");
    for i in 0..100 {
        out.append(&doc(i), r.ack());
    }
    // the bulks time out and are retried while the fault lasts
    std::thread::sleep(Duration::from_millis(1000));
    es.clear_faults();
    assert_eq!(
        out.close(Instant::now() + Duration::from_secs(15))
            .undelivered,
        0
    );
    r.assert_balanced(100);
    assert_eq!(r.indexed(), 100);
    let c = copies(&es);
    assert_eq!(c.len(), 100, "every document indexed at least once");
    assert!(
        r.telemetry
            .render()
            .contains("apm_rs_output_es_bulk_requests_total{outcome=\"retried\"}"),
        "timeouts were retried"
    );
}
