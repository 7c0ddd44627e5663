//! Server-side aggregation through the real server: transactions and spans
//! sent to the intake come out as transaction, service_transaction,
//! service_summary and service_destination metrics at 1m/10m/60m, written
//! through the same output at shutdown; unsampled transactions are
//! aggregated and then discarded.

mod common;

use common::{post, TestServer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");
const META: &str = r#"{"metadata":{"service":{"name":"checkout","environment":"prod","language":{"name":"python"},"agent":{"name":"python","version":"6.0.0"}},"labels":{"team":"payments"}}}"#;

fn transaction(i: usize, sampled: bool, outcome: &str) -> String {
    format!(
        r#"{{"transaction":{{"id":"{i:016x}","trace_id":"{i:032x}","name":"POST /pay","type":"request","duration":250.0,"outcome":"{outcome}","result":"HTTP 2xx","sampled":{sampled},"sample_rate":0.1,"span_count":{{"started":0}},"timestamp":1136214245999999}}}}"#
    )
}

fn exit_span(i: usize) -> String {
    format!(
        r#"{{"span":{{"id":"{i:016x}","trace_id":"{i:032x}","parent_id":"{i:016x}","transaction_id":"{i:016x}","name":"GET payments-db","type":"db","subtype":"postgresql","duration":4.0,"outcome":"success","timestamp":1136214245999999,"sample_rate":0.1,"context":{{"destination":{{"service":{{"resource":"postgresql","name":"","type":""}}}}}}}}}}"#
    )
}

fn by_metricset(docs: &[(String, Value)], interval: &str) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (index, d) in docs {
        if d["metricset"]["interval"] == interval {
            assert_eq!(
                index,
                &format!(
                    "metrics-apm.{}.{interval}-default",
                    d["metricset"]["name"].as_str().unwrap()
                )
            );
            m.entry(d["metricset"]["name"].as_str().unwrap().to_owned())
                .or_default()
                .push(d.clone());
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_transactions_are_counted_in_metrics_and_not_indexed() {
    let mut srv = TestServer::start(&["monitoring.metrics_host=127.0.0.1:0"]);
    let mut body = format!("{META}\n");
    // 2 sampled + 8 unsampled transactions at sample rate 0.1 (each stands for 10)
    for i in 0..10 {
        body.push_str(&transaction(
            i + 1,
            i < 2,
            if i == 9 { "failure" } else { "success" },
        ));
        body.push('\n');
    }
    for i in 0..3 {
        body.push_str(&exit_span(100 + i));
        body.push('\n');
    }
    let url = format!("{}/intake/v2/events", srv.url);
    let r = post(&url, body.into_bytes(), &[NDJSON]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let t = Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await, "drained");

    let events = srv.docs();
    let transactions = events
        .iter()
        .filter(|(index, d)| index.starts_with("traces-") && d["span"]["type"].is_null())
        .count();
    assert_eq!(transactions, 2, "only sampled transactions are indexed");
    let a = t.accounting();
    assert_eq!(a.discarded, 8, "{a:?}");

    let all = srv.all_docs();
    for interval in ["1m", "10m", "60m"] {
        let m = by_metricset(&all, interval);
        let tx = &m["transaction"];
        let doc_count: u64 = tx.iter().map(|d| d["_doc_count"].as_u64().unwrap()).sum();
        assert_eq!(doc_count, 100, "10 transactions × 10 each ({interval})");
        let success = tx
            .iter()
            .find(|d| d["event"]["outcome"] == "success")
            .expect("a success group");
        assert_eq!(success["_doc_count"], 90);
        assert_eq!(
            success["transaction"]["duration"]["histogram"],
            serde_json::json!({"values": [250879], "counts": [90]})
        );
        assert_eq!(success["transaction"]["name"], "POST /pay");
        assert_eq!(success["labels"]["team"], "payments");
        let st = &m["service_transaction"];
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["_doc_count"], 100);
        assert_eq!(
            st[0]["event"]["success_count"],
            serde_json::json!({"value_count": 100, "sum": 90})
        );
        assert_eq!(m["service_summary"].len(), 1);
        assert_eq!(m["service_summary"][0]["service"]["name"], "checkout");
        let sd = &m["service_destination"];
        assert_eq!(sd.len(), 1);
        let rt = &sd[0]["span"]["destination"]["service"]["response_time"];
        assert_eq!(rt["count"], 30);
        assert_eq!(rt["sum"]["us"], 120_000);
    }
    let produced = t.accounting().produced;
    assert_eq!(produced as usize, all.len() - events.len());
    assert_eq!(
        t.aggregation_documents
            .with_label_values(&["transaction"])
            .get(),
        6
    );
    let id = common::identity::Identity::parse(&t.render());
    id.check("aggregation at shutdown");
    assert!(id.drained(), "{id:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_aggregator_off_no_metrics_are_written_and_unsampled_are_still_dropped() {
    let mut srv = TestServer::start(&["pipeline.aggregator.enabled=false"]);
    let mut body = format!("{META}\n");
    for i in 0..4 {
        body.push_str(&transaction(i + 1, i == 0, "success"));
        body.push('\n');
    }
    let url = format!("{}/intake/v2/events", srv.url);
    let r = post(&url, body.into_bytes(), &[NDJSON]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let t = Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await);
    assert_eq!(srv.all_docs().len(), 1);
    let a = t.accounting();
    assert_eq!((a.indexed, a.discarded, a.produced), (1, 3, 0), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_size_is_reported_on_metrics_while_windows_are_open() {
    // a harvest delay of an hour keeps every window open during the test
    let mut srv = TestServer::start(&[
        "monitoring.metrics_host=127.0.0.1:0",
        "pipeline.aggregator.harvest_delay=1h",
    ]);
    let mut body = format!("{META}\n");
    for i in 0..50 {
        body.push_str(
            &transaction(i + 1, true, "success").replace("POST /pay", &format!("GET /item/{i}")),
        );
        body.push('\n');
    }
    let url = format!("{}/intake/v2/events", srv.url);
    let r = post(&url, body.into_bytes(), &[NDJSON]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let addr = srv
        .server
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("metrics listener");
    let gauge = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    // 3 intervals × (1 service + 50 transactions + 1 service transaction);
    // more if the batch straddled a minute boundary (two 1m windows). The
    // 202 is sent before the aggregator sees the batch: wait for it.
    let t0 = Instant::now();
    let text = loop {
        let text = common::identity::scrape(addr).await;
        if gauge(&text, "apm_rs_aggregation_groups ") >= 156 {
            break text;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        gauge(&text, "apm_rs_aggregation_state_bytes ") > 50 * 100,
        "{text}"
    );
    let t = Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await);
    assert!(
        t.aggregation_documents
            .with_label_values(&["transaction"])
            .get()
            >= 150,
        "the shutdown harvest wrote every open window"
    );
}
