//! Unit tests of the Elasticsearch output pieces: bulk buffer (gzip on the
//! fly, subsets, idempotent ids), response parsing, host pool and slots,
//! settings resolution.

use super::config::EsSettings;
use super::request_builder::BulkBuffer;
use super::response::{self, Outcome};
use super::service::Slots;
use crate::output::Ack;
use crate::pipeline::budget::MemoryBudget;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ack(b: &Arc<MemoryBudget>) -> Ack {
    Arc::new(b.try_acquire(10).expect("budget"))
}

fn doc(i: usize) -> Vec<u8> {
    format!("{{\"create\":{{\"_index\":\"logs-apm.app-default\"}}}}\n{{\"i\":{i}}}\n").into_bytes()
}

fn gunzip(b: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut s)
        .expect("gzip");
    s
}

#[test]
fn buffer_gzip_and_subset() {
    let budget = MemoryBudget::new(1000);
    let mut buf = BulkBuffer::new(5, 1024, false);
    for i in 0..5 {
        buf.push(&doc(i), ack(&budget))
            .map_err(|(e, _)| e)
            .expect("push");
    }
    assert_eq!(budget.in_use(), 50);
    let mut body = buf.take().expect("take").expect("some");
    assert!(buf.is_empty());
    assert!(body.gzip);
    let all: String = (0..5)
        .map(|i| String::from_utf8(doc(i)).expect("utf8"))
        .collect();
    assert_eq!(gunzip(&body.bytes), all);
    let sub = body.subset(&[1, 3]).expect("subset");
    // acks of documents 0, 2, 4 released
    assert_eq!(budget.in_use(), 20);
    assert_eq!(sub.docs(), 2);
    let want: String = [1, 3]
        .iter()
        .map(|&i| String::from_utf8(doc(i)).expect("utf8"))
        .collect();
    assert_eq!(gunzip(&sub.bytes), want);
    drop(sub);
    assert_eq!(budget.in_use(), 0);
}

#[test]
fn buffer_plain_and_malformed() {
    let budget = MemoryBudget::new(1000);
    let mut buf = BulkBuffer::new(0, 1024, false);
    assert!(buf.push(b"{\"create\":{}}", ack(&budget)).is_err());
    assert!(buf.push(b"no newline at end\n{}", ack(&budget)).is_err());
    buf.push(&doc(1), ack(&budget))
        .map_err(|(e, _)| e)
        .expect("push");
    let body = buf.take().expect("take").expect("some");
    assert!(!body.gzip);
    assert_eq!(&body.bytes[..], &doc(1)[..]);
    assert!(buf.take().expect("take").is_none());
}

#[test]
fn idempotent_ids_stable_across_resend() {
    let budget = MemoryBudget::new(1000);
    let mut buf = BulkBuffer::new(1, 1024, true);
    for i in 0..3 {
        buf.push(&doc(i), ack(&budget))
            .map_err(|(e, _)| e)
            .expect("push");
    }
    let mut body = buf.take().expect("take").expect("some");
    let text = gunzip(&body.bytes);
    let lines: Vec<&str> = text.lines().collect();
    let a: serde_json::Value = serde_json::from_str(lines[2]).expect("json");
    let id = a["create"]["_id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 22);
    assert_eq!(a["create"]["_index"], "logs-apm.app-default");
    let sub = body.subset(&[1]).expect("subset");
    let text2 = gunzip(&sub.bytes);
    assert!(text2.contains(&id), "resend repeats the id");
}

#[test]
fn response_outcomes() {
    let body = br#"{"items":[
        {"create":{"_index":"a","status":201}},
        {"create":{"_index":"a","status":429,"error":{"type":"es_rejected_execution_exception","reason":"r"}}},
        {"create":{"_index":"b","status":400,"error":{"type":"document_parsing_exception","reason":"bad"}}},
        {"create":{"_index":"a","status":409,"error":{"type":"version_conflict_engine_exception","reason":"dup"}}},
        {"create":{"_index":"a","status":503}}
    ]}"#;
    let items = response::parse(body).expect("parse");
    assert_eq!(response::outcome(items.first(), false), Outcome::Indexed);
    assert_eq!(response::outcome(items.get(1), false), Outcome::Retry);
    assert!(matches!(
        response::outcome(items.get(2), false),
        Outcome::Rejected { ref kind, .. } if kind == "document_parsing_exception"
    ));
    assert!(matches!(
        response::outcome(items.get(3), false),
        Outcome::Rejected { .. }
    ));
    assert_eq!(response::outcome(items.get(3), true), Outcome::Indexed);
    assert_eq!(response::outcome(items.get(4), false), Outcome::Retry);
    assert_eq!(
        response::outcome(items.get(5), false),
        Outcome::Retry,
        "missing item"
    );
    assert!(response::parse(b"not json").is_err());
    assert!(response::parse(b"{}").expect("empty").is_empty());
    assert!(response::parse(br#"{"items":[{}]}"#).is_ok());
}

#[test]
fn slots_block_and_release() {
    let s = Slots::new(2);
    let a = s.acquire(None).expect("a");
    let _b = s.acquire(None).expect("b");
    let t = Instant::now();
    assert!(s.acquire(Some(t + Duration::from_millis(50))).is_none());
    assert!(t.elapsed() >= Duration::from_millis(50));
    let s2 = Arc::clone(&s);
    let h = std::thread::spawn(move || s2.acquire(None).is_some());
    std::thread::sleep(Duration::from_millis(30));
    drop(a);
    assert!(h.join().expect("join"));
}

#[test]
fn settings_resolution() {
    let cfg = crate::config::from_overrides([
        "output.elasticsearch.hosts=[\"es1\", \"https://es2:9243\", \"http://es3/prefix/\"]",
        "output.elasticsearch.path=/base",
        "output.elasticsearch.compression_level=0",
        "output.elasticsearch.flush_bytes=100b",
        "output.elasticsearch.backoff.max=2s",
    ])
    .expect("config");
    let s =
        EsSettings::from_config(cfg.output.elasticsearch.as_ref().expect("es")).expect("settings");
    let hosts: Vec<String> = s.client.hosts.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        hosts,
        vec![
            "http://es1:9200/base",
            "https://es2:9243/base",
            "http://es3:9200/prefix"
        ]
    );
    assert_eq!(s.flush_bytes, 100);
    assert_eq!(s.retry_budget, Duration::from_secs(10));
    assert_eq!(s.client.timeout, Duration::from_secs(5));
    assert_eq!(
        s.client
            .headers
            .get("x-elastic-product-origin")
            .and_then(|v| v.to_str().ok()),
        Some("observability")
    );
    assert!(s.client.headers.get("authorization").is_none());
    s.client().expect("client");

    let cfg = crate::config::from_overrides([
        "output.elasticsearch.hosts=[\"es1\"]",
        "output.elasticsearch.ssl.certificate_authorities=[\"/nonexistent/ca.pem\"]",
    ])
    .expect("config");
    let s =
        EsSettings::from_config(cfg.output.elasticsearch.as_ref().expect("es")).expect("settings");
    assert!(s.client().is_err(), "missing CA file is a start-up error");
}

#[test]
fn client_certificate_settings() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/tls");
    if !dir.join("key.pem").is_file() {
        eprintln!("*** SKIPPED client_certificate_settings: no corpus TLS files ***");
        return;
    }
    let cert = dir.join("certificate.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let ok = crate::config::from_overrides([
        "output.elasticsearch.hosts=[\"https://es1\"]".to_string(),
        format!("output.elasticsearch.ssl.certificate={cert}"),
        format!("output.elasticsearch.ssl.key={key}"),
        "output.elasticsearch.ssl.supported_protocols=[\"TLSv1.3\"]".to_string(),
    ])
    .expect("config");
    let s =
        EsSettings::from_config(ok.output.elasticsearch.as_ref().expect("es")).expect("settings");
    s.client().expect("client with a client certificate");
    let half = crate::config::from_overrides([
        "output.elasticsearch.hosts=[\"https://es1\"]".to_string(),
        format!("output.elasticsearch.ssl.certificate={cert}"),
    ])
    .expect("config");
    let s =
        EsSettings::from_config(half.output.elasticsearch.as_ref().expect("es")).expect("settings");
    assert!(s.client().is_err(), "certificate without key");
    let bad_mode = crate::config::from_overrides([
        "output.elasticsearch.hosts=[\"https://es1\"]",
        "output.elasticsearch.ssl.verification_mode=sometimes",
    ])
    .expect("config");
    let s = EsSettings::from_config(bad_mode.output.elasticsearch.as_ref().expect("es"))
        .expect("settings");
    assert!(s.client().is_err());
}
