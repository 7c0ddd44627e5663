//! Documents written to the file sink: data stream, `@timestamp`, ids and
//! the service/agent/host fields of each event type; RUM documents with the
//! request's client IP and user agent.

mod common;
use common::*;

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn get<'a>(doc: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    path.split('.').fold(doc, |v, k| &v[k])
}

#[tokio::test]
async fn backend_documents_per_event_type() {
    let Some(c) = corpus("backend_documents_per_event_type") else {
        return;
    };
    let mut srv = TestServer::start(&[]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let body = std::fs::read(c.join("intake-v2/events.ndjson")).unwrap();
    let r = post(&url, body, &[NDJSON]).await;
    assert_eq!((r.status, r.accepted()), (202, 4), "{}", r.body);
    let logs = std::fs::read(c.join("intake-v2/logs.ndjson")).unwrap();
    let r = post(&url, logs, &[NDJSON]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(srv.shutdown().await);
    let docs = srv.docs();
    let mut kinds = std::collections::BTreeSet::new();
    for (index, doc) in &docs {
        let ds = get(doc, "data_stream");
        assert_eq!(
            index,
            &format!(
                "{}-{}-{}",
                ds["type"].as_str().unwrap(),
                ds["dataset"].as_str().unwrap(),
                ds["namespace"].as_str().unwrap()
            ),
            "index matches data_stream.*"
        );
        let ts = doc["@timestamp"].as_str().expect("@timestamp is a string");
        assert!(
            ts.ends_with('Z') && ts.len() == "2019-10-21T11:30:44.929Z".len(),
            "{ts}"
        );
        assert!(get(doc, "service.name").is_string(), "{doc}");
        assert!(get(doc, "agent.name").is_string(), "{doc}");
        assert_eq!(get(doc, "observer.type"), "apm-server");
        assert_eq!(
            get(doc, "observer.version"),
            apm_rs::version::COMPAT_VERSION
        );
        if !index.starts_with("logs-apm.app") {
            assert_eq!(
                get(doc, "host.ip")[0],
                "127.0.0.1",
                "backend host.ip is the client IP: {doc}"
            );
        }
        let kind = if index.starts_with("traces-") {
            if get(doc, "transaction.type").is_string() {
                "transaction"
            } else {
                "span"
            }
        } else if index.starts_with("logs-apm.error") {
            "error"
        } else if index.starts_with("metrics-") {
            "metric"
        } else {
            "log"
        };
        match kind {
            "transaction" => {
                assert!(get(doc, "transaction.id").is_string());
                assert!(get(doc, "trace.id").is_string());
                assert!(get(doc, "timestamp.us").is_u64());
                assert_eq!(index, "traces-apm-default");
            }
            "span" => {
                assert!(get(doc, "span.id").is_string());
                assert!(get(doc, "trace.id").is_string());
                assert!(get(doc, "timestamp.us").is_u64());
            }
            "error" => {
                assert!(get(doc, "error.id").is_string());
                assert!(get(doc, "error.grouping_key").is_string());
                assert!(get(doc, "timestamp.us").is_u64());
            }
            "metric" => assert!(
                get(doc, "timestamp").is_null(),
                "no timestamp.us on metrics"
            ),
            _ => assert!(
                get(doc, "message").is_string() || get(doc, "log").is_object(),
                "{doc}"
            ),
        }
        kinds.insert(kind);
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["error", "log", "metric", "span", "transaction"]
    );
}

#[tokio::test]
async fn rum_documents_carry_client_ip_and_user_agent() {
    let Some(c) = corpus("rum_documents_carry_client_ip_and_user_agent") else {
        return;
    };
    let mut srv = TestServer::start(&["apm-server.rum.enabled=true"]);
    let v3 = std::fs::read(c.join("intake-v3/rum_events.ndjson")).unwrap();
    let r = post(
        &format!("{}/intake/v3/rum/events?verbose", srv.url),
        v3,
        &[
            NDJSON,
            ("x-forwarded-for", "203.0.113.7"),
            ("user-agent", "Mozilla/5.0 test"),
        ],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let v2 = std::fs::read(c.join("intake-v2/transactions_spans_rum.ndjson")).unwrap();
    let r = post(
        &format!("{}/intake/v2/rum/events?verbose", srv.url),
        v2,
        &[
            NDJSON,
            ("x-forwarded-for", "203.0.113.8"),
            ("user-agent", "Mozilla/5.0 test"),
        ],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(srv.shutdown().await);
    let docs = srv.docs();
    assert!(!docs.is_empty());
    let mut rum_traces = 0;
    for (index, doc) in &docs {
        if index.starts_with("traces-") {
            assert_eq!(
                index, "traces-apm.rum-default",
                "RUM agents route to apm.rum"
            );
            rum_traces += 1;
        }
        if index.starts_with("traces-") || index.starts_with("logs-apm.error") {
            let ip = get(doc, "client.ip").as_str().unwrap_or_default();
            assert!(ip == "203.0.113.7" || ip == "203.0.113.8", "{doc}");
            assert_eq!(get(doc, "source.nat.ip"), "127.0.0.1");
            assert_eq!(get(doc, "user_agent.original"), "Mozilla/5.0 test");
        }
    }
    assert!(rum_traces > 0);
}

#[tokio::test]
async fn capture_personal_data_off_leaves_out_ip_and_user_agent() {
    let Some(c) = corpus("capture_personal_data_off") else {
        return;
    };
    let mut srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.capture_personal_data=false",
    ]);
    let v2 = std::fs::read(c.join("intake-v2/transactions_spans_rum.ndjson")).unwrap();
    let r = post(
        &format!("{}/intake/v2/rum/events", srv.url),
        v2,
        &[NDJSON, ("user-agent", "ua")],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(srv.shutdown().await);
    for (_, doc) in srv.docs() {
        assert!(get(&doc, "client.ip").is_null(), "{doc}");
        assert!(get(&doc, "user_agent.original").is_null(), "{doc}");
    }
}
