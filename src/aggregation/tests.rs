use super::*;
use crate::model::{DecodeConfig, Decoder, EncodeContext, Metadata, RequestBase};

const META: &str = r#"{"metadata":{"service":{"name":"svc","environment":"prod","language":{"name":"go","version":"2.0"},"agent":{"name":"go","version":"1.0"}},"labels":{"team":"a","n":2},"system":{"hostname":"beowulf","platform":"minix"}}}"#;

fn decode(meta: &str, lines: &[String]) -> (Metadata, Vec<Event>) {
    let base = RequestBase::default();
    let mut d = Decoder::new(DecodeConfig::default());
    let m = d.decode_metadata(meta.as_bytes(), &base).unwrap();
    let mut out = Vec::new();
    for l in lines {
        d.decode_event(l.as_bytes(), &m, &mut out).unwrap();
    }
    (m, out)
}

fn tx(name: &str, ms: f64, outcome: &str, sample_rate: f64) -> String {
    format!(
        r#"{{"transaction":{{"id":"0123456789abcdef","trace_id":"0123456789abcdef0123456789abcdef","name":"{name}","type":"request","duration":{ms},"outcome":"{outcome}","sample_rate":{sample_rate},"sampled":{},"span_count":{{"started":0}},"timestamp":1136214245999999}}}}"#,
        sample_rate >= 1.0
    )
}

fn limits(n: usize) -> Limits {
    Limits {
        max_services: n,
        max_transaction_groups: n,
        max_transaction_groups_per_service: n,
        max_service_transaction_groups: n,
        max_service_transaction_groups_per_service: n,
        max_service_destination_groups: n,
        max_service_destination_groups_per_service: n,
    }
}

fn docs(windows: &[Window]) -> Vec<serde_json::Value> {
    let ctx = EncodeContext {
        observer_hostname: "h".into(),
        observer_version: "9.0.0".into(),
        namespace: "default".into(),
    };
    let mut w = document::Writer::new(&ctx);
    for win in windows {
        w.window(win);
    }
    w.docs
        .iter()
        .map(|d| {
            let s = std::str::from_utf8(d).unwrap();
            let mut lines = s.lines();
            let action: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            let mut doc: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            doc["_index"] = action["create"]["_index"].clone();
            doc
        })
        .collect()
}

const NOW: i64 = 1_700_000_000_000_000_000;

#[test]
fn sampled_and_unsampled_transactions_are_weighted_by_their_representative_count() {
    let (m, evs) = decode(
        META,
        &[
            tx("GET /", 1000.0, "success", 1.0),
            tx("GET /", 1000.0, "failure", 0.1),
        ],
    );
    let shared = Shared::new(limits(100));
    let mut shard = Shard::default();
    for ev in &evs {
        shard.add(ev, Some(&m), NOW, &shared);
    }
    assert!(shard.harvest(Some(NOW)).is_empty(), "windows still open");
    let ws = shard.harvest(None);
    assert_eq!(ws.len(), 3, "one window per interval");
    let d = docs(&ws);
    let txs: Vec<_> = d
        .iter()
        .filter(|d| d["metricset"]["name"] == "transaction")
        .collect();
    assert_eq!(txs.len(), 6, "two outcomes × three intervals: {txs:?}");
    let failure = txs
        .iter()
        .find(|d| d["event"]["outcome"] == "failure" && d["metricset"]["interval"] == "1m")
        .unwrap();
    assert_eq!(failure["_doc_count"], 10);
    assert_eq!(
        failure["transaction"]["duration"]["histogram"]["counts"],
        serde_json::json!([10])
    );
    assert_eq!(
        failure["transaction"]["duration"]["histogram"]["values"],
        serde_json::json!([1003519])
    );
    assert_eq!(
        failure["event"]["success_count"],
        serde_json::json!({"value_count": 10, "sum": 0})
    );
    assert_eq!(failure["@timestamp"], "2006-01-02T15:04:00.000Z");
    assert_eq!(failure["_index"], "metrics-apm.transaction.1m-default");
    assert_eq!(failure["labels"]["team"], "a");
    assert_eq!(failure["numeric_labels"]["n"], 2);
    assert_eq!(failure["host"]["hostname"], "beowulf");
    assert_eq!(failure["transaction"]["root"], true);
    let st: Vec<_> = d
        .iter()
        .filter(|d| {
            d["metricset"]["name"] == "service_transaction" && d["metricset"]["interval"] == "10m"
        })
        .collect();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["_doc_count"], 11);
    assert_eq!(
        st[0]["event"]["success_count"],
        serde_json::json!({"value_count": 11, "sum": 1})
    );
    assert_eq!(st[0]["@timestamp"], "2006-01-02T15:00:00.000Z");
    assert!(st[0]["host"].is_null(), "service metrics carry no host");
    let summaries = d
        .iter()
        .filter(|d| d["metricset"]["name"] == "service_summary")
        .count();
    assert_eq!(summaries, 3);
}

#[test]
fn services_past_the_limit_go_to_the_other_service_with_their_distinct_count() {
    let shared = Shared::new(limits(2));
    let mut shard = Shard::default();
    for env in ["dev", "staging", "prod", "test"] {
        let meta = META.replace("\"prod\"", &format!("\"{env}\""));
        let (m, evs) = decode(&meta, &[tx("t", 5.0, "success", 1.0)]);
        shard.add(&evs[0], Some(&m), NOW, &shared);
    }
    let d = docs(&shard.harvest(None));
    let other: Vec<_> = d
        .iter()
        .filter(|d| d["service"]["name"] == OVERFLOW && d["metricset"]["name"] == "service_summary")
        .collect();
    assert_eq!(other.len(), 3);
    for o in other {
        assert_eq!(o["service_summary"]["aggregation"]["overflow_count"], 2);
    }
    let other_tx = d
        .iter()
        .find(|d| d["service"]["name"] == OVERFLOW && d["metricset"]["name"] == "transaction")
        .unwrap();
    assert_eq!(other_tx["transaction"]["name"], OVERFLOW);
    assert_eq!(other_tx["_doc_count"], 2, "overflow keeps the weight");
}

#[test]
fn past_the_limit_the_least_recently_seen_service_gives_way_with_its_weight() {
    let shared = Shared::new(limits(2));
    let mut shard = Shard::default();
    for env in ["dev", "staging", "dev", "prod"] {
        let meta = META.replace("\"prod\"", &format!("\"{env}\""));
        let (m, evs) = decode(&meta, &[tx("t", 5.0, "success", 1.0)]);
        shard.add(&evs[0], Some(&m), NOW, &shared);
    }
    let d = docs(&shard.harvest(None));
    let kept = |metricset: &str| -> Vec<(String, u64)> {
        let mut v: Vec<_> = d
            .iter()
            .filter(|d| d["metricset"]["name"] == metricset && d["metricset"]["interval"] == "1m")
            .map(|d| {
                let env = d["service"]["environment"].as_str().unwrap_or("_other");
                (env.to_owned(), d["_doc_count"].as_u64().unwrap_or(0))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        kept("transaction"),
        vec![("_other".into(), 1), ("dev".into(), 2), ("prod".into(), 1)],
        "staging, seen least recently, moved to _other with its weight"
    );
    let other = d
        .iter()
        .find(|d| d["service"]["name"] == OVERFLOW && d["metricset"]["name"] == "service_summary")
        .unwrap();
    assert_eq!(other["service_summary"]["aggregation"]["overflow_count"], 1);
}

#[test]
fn a_hundred_thousand_transaction_names_stay_within_the_limits_and_overflow() {
    let shared = Shared::new(Limits {
        max_transaction_groups: 5000,
        max_transaction_groups_per_service: 500,
        ..limits(1000)
    });
    let mut shard = Shard::default();
    let (m, template) = decode(META, &[tx("x", 2.0, "success", 1.0)]);
    let mut peak = 0;
    for i in 0..100_000 {
        let mut ev = template[0].clone();
        if let crate::model::event::Body::Transaction(t) = &mut ev.body {
            t.name = format!("GET /item/{i}").into();
        }
        shard.add(&ev, Some(&m), NOW, &shared);
        peak = peak.max(shard.heap_bytes());
    }
    // 1 service + 500 transactions + 1 service transaction, per interval
    assert_eq!(shard.groups(), 3 * 502);
    assert!(peak < 4 << 20, "state stayed small: {peak} bytes");
    let d = docs(&shard.harvest(None));
    let over: Vec<_> = d
        .iter()
        .filter(|d| d["transaction"]["name"] == OVERFLOW)
        .collect();
    assert_eq!(over.len(), 3);
    for o in &over {
        assert_eq!(
            o["service"]["name"], "svc",
            "per-service overflow keeps the service"
        );
        assert_eq!(o["_doc_count"], 99_500);
        let c = o["transaction"]["aggregation"]["overflow_count"]
            .as_u64()
            .unwrap();
        assert!((94_000..=105_000).contains(&c), "{c}");
    }
    assert_eq!(shard.heap_bytes(), 0, "harvest frees the state");
}

#[test]
fn exit_spans_become_service_destination_metrics_and_other_spans_do_not() {
    let span = |resource: &str| {
        format!(
            r#"{{"span":{{"id":"0123456789abcdef","trace_id":"0123456789abcdef0123456789abcdef","parent_id":"0123456789abcdef","name":"SELECT","type":"db","duration":1000,"outcome":"success","timestamp":1136214245999999{}}}}}"#,
            if resource.is_empty() {
                String::new()
            } else {
                format!(
                    r#","context":{{"destination":{{"service":{{"resource":"{resource}","name":"","type":""}}}}}}"#
                )
            }
        )
    };
    let (m, evs) = decode(META, &[span("mysql"), span("mysql"), span("")]);
    let shared = Shared::new(limits(10));
    let mut shard = Shard::default();
    for ev in &evs {
        shard.add(ev, Some(&m), NOW, &shared);
    }
    let d = docs(&shard.harvest(None));
    let dest: Vec<_> = d
        .iter()
        .filter(|d| d["metricset"]["name"] == "service_destination")
        .collect();
    assert_eq!(dest.len(), 3);
    let r = &dest[0]["span"]["destination"]["service"];
    assert_eq!(r["resource"], "mysql");
    assert_eq!(r["response_time"]["count"], 2);
    assert_eq!(r["response_time"]["sum"]["us"], 2_000_000);
    assert_eq!(dest[0]["_doc_count"], 2);
    assert_eq!(dest[0]["span"]["name"], "SELECT");
}

#[test]
fn a_transactions_dropped_spans_count_in_service_destination_metrics_by_its_weight() {
    let stats = r#","dropped_spans_stats":[{"destination_service_resource":"redis","service_target_type":"redis","outcome":"success","duration":{"count":50,"sum":{"us":5000}}}]}}"#;
    let base = tx("t", 5.0, "success", 0.5);
    let line = format!("{}{stats}", base.strip_suffix("}}").unwrap());
    let (m, evs) = decode(META, &[line]);
    let shared = Shared::new(limits(10));
    let mut shard = Shard::default();
    shard.add(&evs[0], Some(&m), NOW, &shared);
    let d = docs(&shard.harvest(None));
    let dest: Vec<_> = d
        .iter()
        .filter(|d| d["metricset"]["name"] == "service_destination")
        .collect();
    assert_eq!(dest.len(), 3, "one document per interval");
    let r = &dest[0]["span"]["destination"]["service"];
    assert_eq!(r["resource"], "redis");
    assert_eq!(
        r["response_time"]["count"], 100,
        "50 dropped spans at sample rate 0.5"
    );
    assert_eq!(r["response_time"]["sum"]["us"], 10_000);
    assert_eq!(dest[0]["service"]["target"]["type"], "redis");
}
