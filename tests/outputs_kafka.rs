//! The Kafka output against a real Apache Kafka (KRaft, started by
//! `.ci/kafka.sh`; `APM_RS_KAFKA_BOOTSTRAP`), through the real server:
//! records land in the rendered topics and decode to the documents the
//! Elasticsearch output writes; a broker that stops answering mid-load and
//! comes back loses nothing; a missing topic, a message over
//! `max_message_bytes` and refused SASL credentials are counted as failed.
//!
//! The tests share one broker and one of them freezes it, so they run one
//! at a time (a file-wide lock).

mod common;

use common::brokers::{canonical, component, free_port, split_message};
use common::{post, TestServer};
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::{Client, ClientBuilder};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

// These tests count event documents: the server's own aggregated metrics
// (tests/aggregation.rs) are switched off so they do not mix in.
const NO_AGGREGATION: &str = "pipeline.aggregator.enabled=false";

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn client(bootstrap: &str) -> Client {
    ClientBuilder::new(vec![bootstrap.to_string()])
        .build()
        .await
        .expect("test client connects to kafka")
}

async fn create_topic(c: &Client, name: &str, partitions: i32) {
    c.controller_client()
        .unwrap()
        .create_topic(name, partitions, 1, 10_000)
        .await
        .expect("topic created");
}

/// Every record value of every partition of `topic`.
async fn read_topic(c: &Client, topic: &str) -> Vec<Vec<u8>> {
    let topics = c.list_topics().await.unwrap();
    let parts = topics
        .into_iter()
        .find(|t| t.name == topic)
        .expect("topic exists")
        .partitions;
    let mut out = Vec::new();
    for p in parts {
        let pc = c
            .partition_client(topic, p, UnknownTopicHandling::Error)
            .await
            .unwrap();
        let mut offset = 0;
        loop {
            let (records, high) = pc.fetch_records(offset, 1..10_000_000, 100).await.unwrap();
            for r in &records {
                out.push(r.record.value.clone().expect("record value"));
                offset = r.offset + 1;
            }
            if offset >= high || records.is_empty() {
                break;
            }
        }
    }
    out
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), free_port())
}

fn telemetry(s: &TestServer) -> Arc<apm_rs::telemetry::Telemetry> {
    Arc::clone(&s.server.as_ref().expect("running").telemetry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_of_every_kind_reach_their_topic_as_the_elasticsearch_documents() {
    let test = "documents_of_every_kind_reach_their_topic_as_the_elasticsearch_documents";
    let (Some(bootstrap), Some(corpus)) = (
        component("APM_RS_KAFKA_BOOTSTRAP", test),
        common::corpus(test),
    ) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let payload = std::fs::read(corpus.join("intake-v2/events.ndjson")).unwrap();
    let prefix = unique("it");

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
    assert!(expected.len() >= 3, "{:?}", expected.keys());

    let c = client(&bootstrap).await;
    for topic in expected.keys() {
        create_topic(&c, topic, 3).await;
    }
    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!("output.kafka.hosts=[\"{bootstrap}\"]"),
        &format!("output.kafka.topic={prefix}-%{{[data_stream.type]}}"),
        "output.kafka.key='%{[service.name]:none}'",
        "output.kafka.compression=zstd",
    ]);
    let t = telemetry(&server);
    let r = post(
        &format!("{}/intake/v2/events", server.url),
        payload,
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(server.shutdown().await);
    let acc = t.accounting();
    assert_eq!(acc.failed, 0, "{acc:?}");
    assert_eq!(acc.indexed + acc.discarded, acc.accepted, "{acc:?}");
    for (topic, docs) in &expected {
        let got = canonical(read_topic(&c, topic).await.iter().map(|m| split_message(m)));
        assert_eq!(got, canonical(docs.clone()), "topic {topic}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_frozen_mid_load_then_back_loses_nothing() {
    let test = "broker_frozen_mid_load_then_back_loses_nothing";
    let Some(bootstrap) = component("APM_RS_KAFKA_BOOTSTRAP", test) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = unique("load");
    let c = client(&bootstrap).await;
    create_topic(&c, &topic, 2).await;
    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!("output.kafka.hosts=[\"{bootstrap}\"]"),
        &format!("output.kafka.topic={topic}"),
        "output.kafka.partition.round_robin.reachable_only=false",
        "output.kafka.bulk_max_size=100",
        "output.kafka.timeout=2s",
        "output.kafka.backoff.init=100ms",
        "output.kafka.backoff.max=500ms",
        "output.kafka.max_retries=100",
    ]);
    let t = telemetry(&server);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/kafka.sh");
    let broker = |cmd: &str| {
        let ok = std::process::Command::new("bash")
            .args([script, cmd])
            .status()
            .unwrap()
            .success();
        assert!(ok, ".ci/kafka.sh {cmd}");
    };
    let url = format!("{}/intake/v2/events?verbose", server.url);
    let mut accepted = 0;
    let mut unavailable = 0;
    for round in 0..60 {
        if round == 20 {
            broker("pause");
        }
        if round == 40 {
            broker("resume");
        }
        let r = post(&url, common::errors_payload(20, "load", "go"), &[NDJSON]).await;
        let n = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["accepted"].as_u64())
            .unwrap_or(0);
        match r.status {
            202 => accepted += n,
            503 => {
                unavailable += 1;
                accepted += n;
            }
            s => {
                broker("resume");
                panic!("unexpected status {s}: {}", r.body)
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.shutdown().await);
    let acc = t.accounting();
    assert_eq!(acc.accepted, accepted, "{acc:?}");
    assert_eq!(acc.failed, 0, "{acc:?}");
    assert_eq!(
        acc.indexed, accepted,
        "{acc:?} (503 answers: {unavailable})"
    );
    let got = read_topic(&c, &topic).await.len() as u64;
    assert!(got >= accepted, "topic holds {got}, {accepted} accepted");
}

async fn all_fail_as(overrides: &[&str], events: usize) -> (u64, u64) {
    let mut all = vec![NO_AGGREGATION];
    all.extend_from_slice(overrides);
    let mut server = TestServer::start(&all);
    let t = telemetry(&server);
    let r = post(
        &format!("{}/intake/v2/events", server.url),
        common::errors_payload(events, "fails", "go"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(server.shutdown().await);
    let acc = t.accounting();
    assert_eq!(acc.indexed, 0, "{acc:?}");
    assert_eq!(acc.failed, events as u64, "{acc:?}");
    (
        t.events_failed
            .with_label_values(&["rejected_by_output"])
            .get(),
        t.events_failed
            .with_label_values(&["retries_exhausted"])
            .get(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_does_not_exist_fails_its_documents_at_once() {
    let test = "a_topic_that_does_not_exist_fails_its_documents_at_once";
    let Some(bootstrap) = component("APM_RS_KAFKA_BOOTSTRAP", test) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let (rejected, _) = all_fail_as(
        &[
            &format!("output.kafka.hosts=[\"{bootstrap}\"]"),
            &format!("output.kafka.topic={}", unique("missing")),
        ],
        4,
    )
    .await;
    assert_eq!(rejected, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_is_counted_failed_without_sending() {
    let test = "a_message_over_max_message_bytes_is_counted_failed_without_sending";
    let Some(bootstrap) = component("APM_RS_KAFKA_BOOTSTRAP", test) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let topic = unique("small");
    let c = client(&bootstrap).await;
    create_topic(&c, &topic, 1).await;
    let (rejected, _) = all_fail_as(
        &[
            &format!("output.kafka.hosts=[\"{bootstrap}\"]"),
            &format!("output.kafka.topic={topic}"),
            "output.kafka.max_message_bytes=200",
        ],
        3,
    )
    .await;
    assert_eq!(rejected, 3);
    assert!(read_topic(&c, &topic).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sasl_credentials_fail_the_documents() {
    let test = "wrong_sasl_credentials_fail_the_documents";
    let Some(bootstrap) = component("APM_RS_KAFKA_BOOTSTRAP", test) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    // .ci/kafka.sh serves SASL_PLAINTEXT (PLAIN, apm/apm-secret) two ports above PLAINTEXT.
    let (host, port) = bootstrap.rsplit_once(':').unwrap();
    let sasl = format!("{host}:{}", port.parse::<u16>().unwrap() + 2);
    let topic = unique("sasl");
    let c = client(&bootstrap).await;
    create_topic(&c, &topic, 1).await;
    let (rejected, exhausted) = all_fail_as(
        &[
            &format!("output.kafka.hosts=[\"{sasl}\"]"),
            &format!("output.kafka.topic={topic}"),
            "output.kafka.username=apm",
            "output.kafka.password=not-the-secret",
            "output.kafka.timeout=2s",
            "output.kafka.backoff.init=10ms",
            "output.kafka.max_retries=1",
        ],
        2,
    )
    .await;
    assert_eq!(rejected + exhausted, 2);
    assert!(read_topic(&c, &topic).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_sasl_credentials_deliver() {
    let test = "right_sasl_credentials_deliver";
    let Some(bootstrap) = component("APM_RS_KAFKA_BOOTSTRAP", test) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let (host, port) = bootstrap.rsplit_once(':').unwrap();
    let sasl = format!("{host}:{}", port.parse::<u16>().unwrap() + 2);
    let topic = unique("sasl-ok");
    let c = client(&bootstrap).await;
    create_topic(&c, &topic, 1).await;
    let mut server = TestServer::start(&[
        NO_AGGREGATION,
        &format!("output.kafka.hosts=[\"{sasl}\"]"),
        &format!("output.kafka.topic={topic}"),
        "output.kafka.username=apm",
        "output.kafka.password=apm-secret",
        "output.kafka.sasl.mechanism=PLAIN",
    ]);
    let t = telemetry(&server);
    let r = post(
        &format!("{}/intake/v2/events", server.url),
        common::errors_payload(2, "sasl", "go"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(server.shutdown().await);
    assert_eq!(t.accounting().indexed, 2);
    assert_eq!(read_topic(&c, &topic).await.len(), 2);
}
