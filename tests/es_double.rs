//! The Elasticsearch double checked over HTTP against Elasticsearch's
//! documented request and response shapes (not against our client).

use base64::Engine;
use es_double::{ApiKeyAnswer, EsDouble, Faults, Options};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn cluster_info_and_product_header() {
    let es = EsDouble::start();
    let r = client().get(es.url()).send().await.expect("get /");
    assert_eq!(
        r.headers()
            .get("x-elastic-product")
            .and_then(|v| v.to_str().ok()),
        Some("Elasticsearch")
    );
    let (s, v) = json_of(r).await;
    assert_eq!(s, 200);
    assert!(v["version"]["number"].as_str().is_some());
    assert_eq!(v["tagline"], "You Know, for Search");
}

#[tokio::test]
async fn bulk_gzip_filter_path_and_conflicts() {
    let es = EsDouble::start();
    let body = concat!(
        "{\"create\":{\"_index\":\"logs-apm.app-default\"}}\n{\"message\":\"a\"}\n",
        "{\"create\":{\"_index\":\"logs-apm.app-default\",\"_id\":\"x1\"}}\n{\"message\":\"b\"}\n",
        "{\"create\":{\"_index\":\"logs-apm.app-default\",\"_id\":\"x1\"}}\n{\"message\":\"c\"}\n",
        "{\"index\":{\"_index\":\"logs-apm.app-default\"}}\n{\"message\":\"d\"}\n",
    );
    let url = format!(
        "{}/_bulk?require_data_stream=true&filter_path=items.*._index,items.*.status,items.*.error.type,items.*.error.reason",
        es.url()
    );
    let r = client()
        .post(url)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(body.as_bytes()))
        .send()
        .await
        .expect("bulk");
    let (s, v) = json_of(r).await;
    assert_eq!(s, 200);
    let items = v["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[0],
        json!({"create": {"_index": "logs-apm.app-default", "status": 201}})
    );
    assert_eq!(items[1]["create"]["status"], 201);
    assert_eq!(items[2]["create"]["status"], 409);
    assert_eq!(
        items[2]["create"]["error"]["type"],
        "version_conflict_engine_exception"
    );
    // require_data_stream: only create is allowed
    assert_eq!(items[3]["index"]["status"], 400);
    assert!(v.get("errors").is_none(), "filtered out by filter_path");
    assert_eq!(es.docs("logs-apm.app-default").len(), 2);
    assert_eq!(es.bulk_requests(), 1);

    // without filter_path: the full ES shape
    let r = client()
        .post(format!("{}/_bulk", es.url()))
        .body("{\"create\":{\"_index\":\"a-b-c\"}}\n{\"x\":1}\n")
        .send()
        .await
        .expect("bulk");
    let (_, v) = json_of(r).await;
    assert_eq!(v["errors"], false);
    assert!(v["took"].is_number());
    assert_eq!(v["items"][0]["create"]["result"], "created");
    assert!(v["items"][0]["create"]["_id"].is_string());
}

#[tokio::test]
async fn item_and_request_faults() {
    let es = EsDouble::start();
    // through the HTTP control endpoint
    let r = client()
        .post(format!("{}/_double/faults", es.url()))
        .json(&json!({"item_429_fraction": 0.5}))
        .send()
        .await
        .expect("faults");
    assert_eq!(r.status().as_u16(), 200);
    let mut body = String::new();
    for i in 0..10 {
        body.push_str(&format!(
            "{{\"create\":{{\"_index\":\"a-b-c\"}}}}\n{{\"i\":{i}}}\n"
        ));
    }
    let r = client()
        .post(format!("{}/_bulk", es.url()))
        .body(body.clone())
        .send()
        .await
        .expect("bulk");
    let (_, v) = json_of(r).await;
    let statuses: Vec<u64> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["create"]["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 5);
    assert_eq!(v["errors"], true);
    assert_eq!(es.doc_count(), 5);

    es.set_faults(Faults {
        request_status: Some(503),
        request_fault_limit: Some(1),
        ..Default::default()
    });
    let r = client()
        .post(format!("{}/_bulk", es.url()))
        .body(body.clone())
        .send()
        .await
        .expect("bulk");
    let (s, v) = json_of(r).await;
    assert_eq!(s, 503);
    assert_eq!(v["status"], 503);
    assert!(v["error"]["type"].is_string());
    assert_eq!(es.doc_count(), 5, "a failed request indexes nothing");
    let r = client()
        .post(format!("{}/_bulk", es.url()))
        .body(body.clone())
        .send()
        .await
        .expect("bulk");
    assert_eq!(r.status().as_u16(), 200, "limit reached, fault cleared");

    es.set_faults(Faults {
        drop_connection: true,
        ..Default::default()
    });
    let r = client()
        .post(format!("{}/_bulk", es.url()))
        .body(body)
        .send()
        .await;
    let body_err = match r {
        Ok(resp) => resp.bytes().await.is_err(),
        Err(_) => true,
    };
    assert!(body_err, "connection dropped mid-response");
    assert_eq!(es.doc_count(), 25, "dropped after indexing");

    let stats: Value = client()
        .get(format!("{}/_double/stats", es.url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["docs"], 25);
    assert_eq!(stats["bulk_requests"], 4);
}

#[tokio::test]
async fn latency_and_down_for() {
    let es = EsDouble::start();
    es.set_faults(Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let t = std::time::Instant::now();
    client().get(es.url()).send().await.expect("get");
    assert!(t.elapsed() >= Duration::from_millis(300));
    es.clear_faults();
    es.down_for(Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        client().get(es.url()).send().await.is_err(),
        "refused while down"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = client().get(es.url()).send().await.expect("back up");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn has_privileges_per_api_key() {
    let es = EsDouble::start();
    es.set_api_key(
        "id1",
        "secret1",
        ApiKeyAnswer::granted("apm-agent", &["event:write"]),
    );
    es.set_api_key("id2", "secret2", ApiKeyAnswer::status(503));
    let body = r#"{"application":[{"application":"apm","privileges":["config_agent:read","event:write","sourcemap:write"],"resources":["-"]}]}"#;
    let call = |cred: &str| {
        let h = format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(cred)
        );
        client()
            .get(format!("{}/_security/user/_has_privileges", es.url()))
            .header("authorization", h)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (s, v) = json_of(call("id1:secret1").await.expect("call")).await;
    assert_eq!(s, 200);
    assert_eq!(v["username"], "apm-agent");
    assert_eq!(v["has_all_requested"], false);
    assert_eq!(
        v["application"]["apm"]["-"],
        json!({"config_agent:read": false, "event:write": true, "sourcemap:write": false})
    );
    let (s, v) = json_of(call("id1:wrong").await.expect("call")).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["type"], "security_exception");
    let (s, _) = json_of(call("id2:secret2").await.expect("call")).await;
    assert_eq!(s, 503);
    assert_eq!(es.has_privileges_calls(), 3);
    assert_eq!(es.last_has_privileges_body().as_deref(), Some(body));
}

#[tokio::test]
async fn scroll_over_agent_configuration() {
    let es = EsDouble::start();
    for i in 0..250 {
        es.put_doc(
            ".apm-agent-configuration",
            &format!("c{i}"),
            json!({"service": {"name": format!("svc{i}"), "environment": "prod"},
                   "agent_name": "java", "etag": format!("e{i}"),
                   "settings": {"transaction_sample_rate": "0.5"}}),
        );
    }
    let c = client();
    let (s, v) = json_of(
        c.post(format!(
            "{}/.apm-agent-configuration/_search?scroll=30000ms&size=100",
            es.url()
        ))
        .send()
        .await
        .expect("search"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["hits"]["total"]["value"], 250);
    assert_eq!(v["hits"]["hits"].as_array().map(Vec::len), Some(100));
    assert_eq!(v["hits"]["hits"][0]["_source"]["etag"], "e0");
    let sid = v["_scroll_id"].as_str().expect("scroll id").to_string();
    let mut seen = 100;
    loop {
        let (s, v) = json_of(
            c.post(format!(
                "{}/_search/scroll?scroll=30000ms&scroll_id={sid}",
                es.url()
            ))
            .send()
            .await
            .expect("scroll"),
        )
        .await;
        assert_eq!(s, 200);
        let n = v["hits"]["hits"].as_array().map_or(0, Vec::len);
        if n == 0 {
            break;
        }
        seen += n;
    }
    assert_eq!(seen, 250);
    assert_eq!(es.open_scrolls(), 1);
    let (s, v) = json_of(
        c.delete(format!("{}/_search/scroll/{sid}", es.url()))
            .send()
            .await
            .expect("clear"),
    )
    .await;
    assert_eq!((s, v["num_freed"].as_u64()), (200, Some(1)));
    assert_eq!(es.open_scrolls(), 0);
    // the body form of the scroll call, unknown id → 404
    let r = c
        .post(format!("{}/_search/scroll", es.url()))
        .json(&json!({"scroll": "1m", "scroll_id": sid}))
        .send()
        .await
        .expect("scroll");
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn source_map_search_with_source_filter_and_query() {
    let es = EsDouble::start();
    let c = client();
    let r = c
        .put(format!(
            "{}/.apm-source-map/_doc/app-1.0-http%3A%2F%2Fx%2Fa.js",
            es.url()
        ))
        .json(&json!({"service": {"name": "app", "version": "1.0"},
                      "file": {"path": "http://x/a.js"},
                      "content": "eJwrSS0uAQAEXQHB", "content_sha256": "abc"}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 201);
    let r = c
        .post(format!("{}/.apm-source-map/_doc", es.url()))
        .json(
            &json!({"service": {"name": "other", "version": "2"}, "file": {"path": "b.js"},
                      "content": "x", "content_sha256": "def"}),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let (s, v) = json_of(
        c.post(format!(
            "{}/.apm-source-map/_search?_source=service.*,file.path,content_sha256&track_total_hits=true&scroll=60000ms",
            es.url()
        ))
        .send()
        .await
        .expect("search"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v["hits"]["total"]["value"], 2);
    let src = &v["hits"]["hits"][0]["_source"];
    assert!(src.get("content").is_none(), "_source filtered");
    assert_eq!(src["content_sha256"], "abc");
    assert_eq!(src["service"]["name"], "app");
    let (_, v) = json_of(
        c.post(format!("{}/.apm-source-map/_search", es.url()))
            .json(&json!({"query": {"bool": {"filter": [
                {"term": {"service.name": "app"}},
                {"term": {"service.version": "1.0"}},
                {"term": {"file.path": "http://x/a.js"}}]}}, "size": 1}))
            .send()
            .await
            .expect("search"),
    )
    .await;
    assert_eq!(v["hits"]["hits"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        v["hits"]["hits"][0]["_source"]["content"],
        "eJwrSS0uAQAEXQHB"
    );
    // _create conflicts, GET by id
    let r = c
        .put(format!(
            "{}/.apm-source-map/_create/app-1.0-http%3A%2F%2Fx%2Fa.js",
            es.url()
        ))
        .json(&json!({}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status().as_u16(), 409);
    let (s, v) = json_of(
        c.get(format!(
            "{}/.apm-source-map/_doc/app-1.0-http%3A%2F%2Fx%2Fa.js",
            es.url()
        ))
        .send()
        .await
        .expect("get"),
    )
    .await;
    assert_eq!((s, v["found"].as_bool()), (200, Some(true)));
    // missing index → 404 index_not_found_exception
    let (s, v) = json_of(
        c.post(format!("{}/.nope/_search", es.url()))
            .send()
            .await
            .expect("search"),
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "index_not_found_exception");
}

#[tokio::test]
async fn fast_mode_counts_only() {
    let es = EsDouble::start_with(Options {
        fast: true,
        ..Default::default()
    })
    .expect("start");
    let mut body = String::new();
    for i in 0..1000 {
        body.push_str(&format!(
            "{{\"create\":{{\"_index\":\"a-b-c\"}}}}\n{{\"i\":{i}}}\n"
        ));
    }
    let r = client()
        .post(format!("{}/_bulk?filter_path=items.*.status", es.url()))
        .header("content-encoding", "gzip")
        .body(gzip(body.as_bytes()))
        .send()
        .await
        .expect("bulk");
    let (_, v) = json_of(r).await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(1000));
    assert_eq!(v["items"][0], json!({"create": {"status": 201}}));
    assert_eq!(es.doc_count(), 1000);
    assert!(es.indices().is_empty(), "nothing stored");
}
