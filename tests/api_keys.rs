//! API keys through the real server, verified against the Elasticsearch
//! double: privileges per endpoint, one verification then the cache, a
//! cached id with a wrong secret re-verified, Elasticsearch down → 503.

mod common;
use base64::Engine;
use common::*;
use es_double::{ApiKeyAnswer, EsDouble};
use serde_json::json;

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn api_key(id: &str, key: &str) -> String {
    format!(
        "ApiKey {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
    )
}

#[tokio::test]
async fn api_keys_verified_once_then_cached() {
    let es = EsDouble::start();
    es.set_api_key(
        "ingest",
        "s3cret",
        ApiKeyAnswer::granted("u1", &["event:write"]),
    );
    es.set_api_key(
        "cfg",
        "s3cret",
        ApiKeyAnswer::granted("u2", &["config_agent:read"]),
    );
    let srv = TestServer::start(&[
        "apm-server.auth.api_key.enabled=true",
        &format!(
            "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
            es.url()
        ),
    ]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let good = api_key("ingest", "s3cret");
    for _ in 0..3 {
        let r = post(
            &url,
            errors_payload(2, "svc", "python"),
            &[NDJSON, ("authorization", good.as_str())],
        )
        .await;
        assert_eq!((r.status, r.accepted()), (202, 2), "{}", r.body);
    }
    assert_eq!(
        es.has_privileges_calls(),
        1,
        "verified once, then served from the cache"
    );
    // the same id with a wrong secret is verified again (deliberate difference from apm-server)
    let wrong = api_key("ingest", "guess");
    let r = post(
        &url,
        errors_payload(1, "svc", "python"),
        &[NDJSON, ("authorization", wrong.as_str())],
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json(), json!({"error": "authentication failed"}));
    assert_eq!(es.has_privileges_calls(), 2);
    // a key without event:write → 403 in the stream result
    let cfg_key = api_key("cfg", "s3cret");
    let r = post(
        &url,
        errors_payload(1, "svc", "python"),
        &[NDJSON, ("authorization", cfg_key.as_str())],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["message"], "cannot handle stream: cannot process batch: unauthorized: API Key not permitted action \"event:write\"");
    // malformed credentials (G.63/G.64)
    let r = post(
        &url,
        vec![],
        &[NDJSON, ("authorization", "ApiKey invalid_base64")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("authentication failed: improperly encoded ApiKey credentials"));
    // root: any valid key sees the body
    let r = send(
        reqwest::Method::GET,
        &format!("{}/", srv.url),
        vec![],
        &[("authorization", good.as_str())],
    )
    .await;
    assert!(r.body.contains("build_sha"));
}

#[tokio::test]
async fn elasticsearch_down_gives_503_and_is_not_cached() {
    let es = EsDouble::start();
    es.set_api_key("k", "v", ApiKeyAnswer::granted("u", &["event:write"]));
    let srv = TestServer::start(&[
        "apm-server.auth.api_key.enabled=true",
        &format!(
            "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
            es.url()
        ),
        "apm-server.auth.api_key.elasticsearch.max_retries=0",
        "apm-server.auth.api_key.elasticsearch.timeout=2s",
    ]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let key = api_key("k", "v");
    es.down_for(std::time::Duration::from_secs(2));
    let r = post(
        &url,
        errors_payload(1, "svc", "python"),
        &[NDJSON, ("authorization", key.as_str())],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json(), json!({"error": "service unavailable"}));
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let r = post(
        &url,
        errors_payload(1, "svc", "python"),
        &[NDJSON, ("authorization", key.as_str())],
    )
    .await;
    assert_eq!(
        r.status, 202,
        "the failure was not cached as a denial: {}",
        r.body
    );
}
