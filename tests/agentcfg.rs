//! Agent central configuration through the real HTTP server, with the
//! Elasticsearch test double holding `.apm-agent-configuration`
//! (cases O.116–O.132, E.53, P.133, R.151 agent-config rows for secret
//! token and anonymous callers).

mod common;

use common::TestServer;
use es_double::EsDouble;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const INDEX: &str = ".apm-agent-configuration";
const CC_ERR: &str = "max-age=300, must-revalidate";
const CC_OK: &str = "max-age=1, must-revalidate";
const MSG_NOT_READY: &str = "Agent configuration infrastructure is not ready. Please retry later.";
const MSG_INVALID_ES: &str = "Your Elasticsearch configuration does not support agent config queries. Check your configurations at `output.elasticsearch` or `apm-server.agent.config.elasticsearch`.";
const MSG_MISSING: &str = "authentication failed: missing or improperly formatted Authorization header: expected 'Authorization: Bearer secret_token' or 'Authorization: ApiKey base64(API key ID:API key)'";

fn doc(
    name: &str,
    env: &str,
    agent: &str,
    etag: &str,
    settings: serde_json::Value,
) -> serde_json::Value {
    let mut service = json!({});
    if !name.is_empty() {
        service["name"] = json!(name);
    }
    if !env.is_empty() {
        service["environment"] = json!(env);
    }
    json!({"service": service, "agent_name": agent, "etag": etag, "settings": settings})
}

/// A server reading agent config from `es`, refreshed every second.
fn server(es: &EsDouble, extra: &[&str]) -> TestServer {
    let hosts = format!(
        "apm-server.agent.config.elasticsearch.hosts=[\"{}\"]",
        es.host()
    );
    let mut ov: Vec<&str> = vec![&hosts, "apm-server.agent.config.cache.expiration=1s"];
    ov.extend_from_slice(extra);
    TestServer::start(&ov)
}

fn header<'a>(r: &'a common::Reply, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Like `common::send`, but compact JSON unless the test asks for another
/// `Accept` (reqwest sends `Accept: */*` by default).
async fn send(method: Method, url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> common::Reply {
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    if !h.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
        h.push(("Accept", "text/plain"));
    }
    common::send(method, url, body, &h).await
}

async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> common::Reply {
    send(Method::POST, url, body, headers).await
}

async fn get(url: &str, headers: &[(&str, &str)]) -> common::Reply {
    send(Method::GET, url, Vec::new(), headers).await
}

/// Polls `url` until `done` holds (the cache refreshes every second).
async fn until(
    url: &str,
    headers: &[(&str, &str)],
    done: impl Fn(&common::Reply) -> bool,
) -> common::Reply {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(url, headers).await;
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(url: &str, headers: &[(&str, &str)]) -> common::Reply {
    until(url, headers, |r| r.status != 503).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_not_modified_and_errors_o116_to_o121() {
    let es = EsDouble::start();
    es.put_doc(
        INDEX,
        "1",
        doc(
            "opbeans-node",
            "",
            "",
            "1c9588f5a4da71cdef992981a9c9735c",
            json!({"sampling_rate": "0.5"}),
        ),
    );
    let s = server(&es, &[]);
    let base = format!("{}/config/v1/agents", s.url);
    let url = format!("{base}?service.name=opbeans-node");

    // O.116: matching etag → 304, no body.
    let r = ready(
        &url,
        &[("If-None-Match", "\"1c9588f5a4da71cdef992981a9c9735c\"")],
    )
    .await;
    assert_eq!(r.status, 304, "{}", r.body);
    assert_eq!(header(&r, "cache-control"), Some(CC_OK));
    assert_eq!(
        header(&r, "etag"),
        Some("\"1c9588f5a4da71cdef992981a9c9735c\"")
    );
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    assert!(r.body.is_empty());

    // O.117: other etag → 200 with the settings.
    let r = get(&url, &[("If-None-Match", "2")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"sampling_rate\":\"0.5\"}\n");
    assert_eq!(header(&r, "cache-control"), Some(CC_OK));
    assert_eq!(
        header(&r, "etag"),
        Some("\"1c9588f5a4da71cdef992981a9c9735c\"")
    );
    assert_eq!(header(&r, "access-control-expose-headers"), Some("Etag"));
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );

    // Pretty JSON for JSON clients.
    let r = get(&url, &[("Accept", "application/json")]).await;
    assert_eq!(r.body, "{\n  \"sampling_rate\": \"0.5\"\n}\n");

    // O.118: no config → {} with etag "-".
    let r = get(&format!("{base}?service.name=unknown"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{}\n");
    assert_eq!(header(&r, "etag"), Some("\"-\""));
    assert_eq!(header(&r, "cache-control"), Some(CC_OK));

    // O.120: service.name missing.
    let r = get(&base, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "{\"error\":\"service.name is required\"}\n");
    assert_eq!(header(&r, "cache-control"), Some(CC_ERR));
    assert!(header(&r, "etag").is_none());

    // O.121: unsupported method.
    let r = send(Method::PUT, &url, Vec::new(), &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body, "{\"error\":\"method not supported: PUT\"}\n");
    assert_eq!(header(&r, "cache-control"), Some(CC_ERR));

    // O.124: POST body.
    let r = post(
        &base,
        br#"{"service":{"name":"opbeans-node"}}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"sampling_rate\":\"0.5\"}\n");
    // gzip-compressed POST body.
    let r = post(
        &base,
        common::gzip(br#"{"service":{"name":"opbeans-node"}}"#),
        &[("Content-Encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // POST without body → the parser's message.
    let r = post(&base, Vec::new(), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body, "{\"error\":\"EOF\"}\n");
    let r = post(&base, b"{\"service\":".to_vec(), &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("EOF while parsing"), "{}", r.body);
    // POST with the etag in If-None-Match (overrides the body's etag).
    let r = post(
        &base,
        br#"{"service":{"name":"opbeans-node"},"etag":"x"}"#.to_vec(),
        &[("If-None-Match", "1c9588f5a4da71cdef992981a9c9735c")],
    )
    .await;
    assert_eq!(r.status, 304);

    // Requests are counted by route.
    let text = s.telemetry().render();
    assert!(
        text.contains("route=\"/config/v1/agents\",status=\"304\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_forms_o129_and_ifnonematch_o127() {
    let es = EsDouble::start();
    es.put_doc(INDEX, "1", doc("opbeans", "", "", "123", json!({"a": "b"})));
    let s = server(&es, &[]);
    let url = format!("{}/config/v1/agents?service.name=opbeans", s.url);
    let r = ready(&url, &[("If-None-Match", "123")]).await;
    assert_eq!(r.status, 304);
    assert_eq!(get(&url, &[("If-None-Match", "\"123\"")]).await.status, 304);
    assert_eq!(
        get(&format!("{url}&ifnonematch=123"), &[]).await.status,
        304
    );
    // The header wins over the parameter.
    assert_eq!(
        get(&format!("{url}&ifnonematch=123"), &[("If-None-Match", "9")])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_o119_and_p136() {
    // Nothing listens on port 1: the cache never loads.
    let s = TestServer::start(&[
        "apm-server.agent.config.elasticsearch.hosts=[\"127.0.0.1:1\"]",
        "apm-server.agent.config.cache.expiration=1s",
    ]);
    let r = get(&format!("{}/config/v1/agents?service.name=x", s.url), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, format!("{{\"error\":\"{MSG_NOT_READY}\"}}\n"));
    assert_eq!(header(&r, "cache-control"), Some(CC_ERR));
    assert!(header(&r, "etag").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_environment_o125_and_precedence() {
    let es = EsDouble::start();
    es.put_doc(
        INDEX,
        "1",
        doc("opbeans-node", "default", "", "d", json!({"v": "default"})),
    );
    es.put_doc(
        INDEX,
        "2",
        doc(
            "opbeans-node",
            "specified",
            "",
            "s",
            json!({"v": "specified"}),
        ),
    );
    es.put_doc(INDEX, "3", doc("", "", "", "any", json!({"v": "any"})));
    let s = server(&es, &["apm-server.default_service_environment=default"]);
    let base = format!("{}/config/v1/agents", s.url);
    ready(&format!("{base}?service.name=x"), &[]).await;
    let r = post(
        &base,
        br#"{"service":{"name":"opbeans-node","environment":"specified"}}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(r.body, "{\"v\":\"specified\"}\n");
    let r = post(
        &base,
        br#"{"service":{"name":"opbeans-node"}}"#.to_vec(),
        &[],
    )
    .await;
    assert_eq!(r.body, "{\"v\":\"default\"}\n");
    let r = get(
        &format!("{base}?service.name=opbeans-node&service.environment=other"),
        &[],
    )
    .await;
    assert_eq!(r.body, "{\"v\":\"any\"}\n");
    assert_eq!(header(&r, "etag"), Some("\"any\""));
}

fn anon_server(es: &EsDouble, extra: &[&str]) -> TestServer {
    let mut ov = vec![
        "apm-server.auth.secret_token=1234",
        "apm-server.rum.enabled=true",
    ];
    ov.extend_from_slice(extra);
    server(es, &ov)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_filtering_o126_o127_o128_p133() {
    let es = EsDouble::start();
    let settings = json!({"transaction_sample_rate": "0.5", "capture_body": "transactions"});
    es.put_doc(
        INDEX,
        "1",
        doc("opbeans", "", "rum-js", "123", settings.clone()),
    );
    es.put_doc(INDEX, "2", doc("backend", "", "node-js", "456", settings));
    let s = anon_server(&es, &["apm-server.auth.anonymous.allow_agent=[\"rum-js\"]"]);
    for path in ["/config/v1/agents", "/config/v1/rum/agents"] {
        let base = format!("{}{path}", s.url);
        ready(&format!("{base}?service.name=opbeans"), &[]).await;
        // O.126: anonymous sees only transaction_sample_rate.
        let r = post(&base, br#"{"service":{"name":"opbeans"}}"#.to_vec(), &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.body, "{\"transaction_sample_rate\":\"0.5\"}\n");
        assert_eq!(header(&r, "access-control-expose-headers"), Some("Etag"));
        assert_eq!(header(&r, "etag"), Some("\"123\""));
        // O.127.
        let r = get(&format!("{base}?ifnonematch=123&service.name=opbeans"), &[]).await;
        assert_eq!(r.status, 304);
        // O.128: a node-js document is hidden from anonymous callers…
        let r = get(&format!("{base}?service.name=backend"), &[]).await;
        assert_eq!(r.body, "{}\n");
        assert_eq!(header(&r, "etag"), Some("\"-\""));
        // …and complete for authenticated ones.
        let r = get(
            &format!("{base}?service.name=backend"),
            &[("Authorization", "Bearer 1234")],
        )
        .await;
        assert_eq!(
            r.body,
            "{\"capture_body\":\"transactions\",\"transaction_sample_rate\":\"0.5\"}\n"
        );
        // Anonymous error texts.
        let r = get(&base, &[]).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.body, "{\"error\":\"invalid query\"}\n");
        let r = send(Method::DELETE, &base, Vec::new(), &[]).await;
        assert_eq!(r.status, 405);
        assert_eq!(r.body, "{\"error\":\"method not supported\"}\n");
        let r = post(&base, b"nope".to_vec(), &[]).await;
        assert_eq!(r.body, "{\"error\":\"invalid query\"}\n");
        // Wrong token → 401 before anything else.
        let r = get(
            &format!("{base}?service.name=opbeans"),
            &[("Authorization", "Bearer nope")],
        )
        .await;
        assert_eq!(r.status, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_service_denied_o123() {
    let es = EsDouble::start();
    es.put_doc(INDEX, "1", doc("opbeans", "", "", "1", json!({"a": "b"})));
    let s = anon_server(
        &es,
        &["apm-server.auth.anonymous.allow_service=[\"allowed\"]"],
    );
    let base = format!("{}/config/v1/rum/agents", s.url);
    ready(&format!("{base}?service.name=allowed"), &[]).await;
    let r = get(&format!("{base}?service.name=opbeans"), &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        "{\"error\":\"unauthorized: anonymous access not permitted for service \\\"opbeans\\\"\"}\n"
    );
    assert_eq!(header(&r, "cache-control"), Some(CC_ERR));
    // The token holder is not restricted.
    let r = get(
        &format!("{base}?service.name=opbeans"),
        &[("Authorization", "Bearer 1234")],
    )
    .await;
    assert_eq!(r.body, "{\"a\":\"b\"}\n");
}

fn api_key(id: &str, key: &str) -> String {
    use base64::Engine;
    format!(
        "ApiKey {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_r151() {
    use es_double::ApiKeyAnswer;
    let es = EsDouble::start();
    es.put_doc(
        INDEX,
        "1",
        doc(
            "systemtest_service",
            "",
            "",
            "e1",
            json!({"transaction_sample_rate": "0.1", "sanitize_field_names": "foo,bar,baz"}),
        ),
    );
    for (id, privs) in [
        (
            "all",
            &["event:write", "sourcemap:write", "config_agent:read"][..],
        ),
        ("sourcemap", &["sourcemap:write"][..]),
        ("ingest", &["event:write"][..]),
        ("agentconfig", &["config_agent:read"][..]),
    ] {
        es.set_api_key(id, "secret", ApiKeyAnswer::granted("u", privs));
    }
    let api_hosts = format!(
        "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
        es.url()
    );
    let s = anon_server(
        &es,
        &[
            "apm-server.auth.anonymous.allow_agent=[\"apm-agent-js\", \"rum-js\"]",
            "apm-server.auth.api_key.enabled=true",
            &api_hosts,
        ],
    );
    const FULL: &str =
        "{\"sanitize_field_names\":\"foo,bar,baz\",\"transaction_sample_rate\":\"0.1\"}\n";
    const DENIED: &str =
        "{\"error\":\"unauthorized: API Key not permitted action \\\"config_agent:read\\\"\"}\n";
    let keys: Vec<(&str, String)> = ["all", "sourcemap", "ingest", "agentconfig"]
        .iter()
        .map(|id| (*id, api_key(id, "secret")))
        .collect();
    for path in ["/config/v1/agents", "/config/v1/rum/agents"] {
        let url = format!("{}{path}?service.name=systemtest_service", s.url);
        let r = ready(&url, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.body, "{\"transaction_sample_rate\":\"0.1\"}\n",
            "anonymous"
        );
        let r = get(&url, &[("Authorization", "Bearer 1234")]).await;
        assert_eq!((r.status, r.body.as_str()), (200, FULL), "token");
        for (id, key) in &keys {
            let r = get(&url, &[("Authorization", key.as_str())]).await;
            match *id {
                "all" | "agentconfig" => {
                    assert_eq!((r.status, r.body.as_str()), (200, FULL), "{id}")
                }
                _ => {
                    assert_eq!((r.status, r.body.as_str()), (403, DENIED), "{id}");
                    assert_eq!(header(&r, "cache-control"), Some(CC_ERR));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_token_e53() {
    // Empty index (the double has no such index yet): no config.
    let es = EsDouble::start();
    let s = server(&es, &["apm-server.auth.secret_token=1234"]);
    let base = format!("{}/config/v1/agents", s.url);
    let r = post(&base, br#"{"service":{"name":"service1"}}"#.to_vec(), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, format!("{{\"error\":\"{MSG_MISSING}\"}}\n"));
    let r = ready(
        &format!("{base}?service.name=service1"),
        &[("Authorization", "Bearer 1234")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rum_route_kill_switch_and_headers() {
    let es = EsDouble::start();
    let s = server(
        &es,
        &[
            "apm-server.response_headers.both=all_value",
            "apm-server.rum.response_headers.both=rum_value",
            "apm-server.rum.response_headers.only_rum=rum_value",
        ],
    );
    // RUM disabled (default) → kill switch.
    let r = get(
        &format!("{}/config/v1/rum/agents?service.name=x", s.url),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("RUM endpoint is disabled"), "{}", r.body);
    drop(s);
    let s = server(
        &es,
        &[
            "apm-server.rum.enabled=true",
            "apm-server.response_headers.both=all_value",
            "apm-server.rum.response_headers.both=rum_value",
            "apm-server.rum.response_headers.only_rum=rum_value",
        ],
    );
    let r = ready(
        &format!("{}/config/v1/rum/agents?service.name=x", s.url),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let both: Vec<_> = r
        .headers
        .get_all("both")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(both, ["all_value", "rum_value"]);
    assert_eq!(header(&r, "only_rum"), Some("rum_value"));
    // CORS (docs/security.md): a preflight is answered before authentication.
    let r = send(
        Method::OPTIONS,
        &format!("{}/config/v1/rum/agents", s.url),
        Vec::new(),
        &[("Origin", "http://x")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // Backend route: global headers only.
    let r = get(&format!("{}/config/v1/agents?service.name=x", s.url), &[]).await;
    assert_eq!(header(&r, "both"), Some("all_value"));
    assert!(header(&r, "only_rum").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_level_refresh_o131() {
    let es = EsDouble::start();
    // Some other service's document (the index exists).
    es.put_doc(INDEX, "0", doc("other", "", "", "o", json!({"x": "y"})));
    let s = server(&es, &[]);
    let url = format!(
        "{}/config/v1/agents?service.name=svc&service.environment=prod",
        s.url
    );
    let r = ready(&url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{}\n");
    assert_eq!(header(&r, "etag"), Some("\"-\""));
    assert_eq!(get(&url, &[("If-None-Match", "\"-\"")]).await.status, 304);

    es.put_doc(
        INDEX,
        "1",
        doc(
            "svc",
            "",
            "",
            "any-env",
            json!({"transaction_sample_rate": "0.2"}),
        ),
    );
    let r = until(&url, &[], |r| r.body != "{}\n").await;
    assert_eq!(r.body, "{\"transaction_sample_rate\":\"0.2\"}\n");
    assert_eq!(header(&r, "etag"), Some("\"any-env\""));
    assert_eq!(
        get(&url, &[("If-None-Match", "\"any-env\"")]).await.status,
        304
    );

    es.put_doc(
        INDEX,
        "2",
        doc(
            "svc",
            "prod",
            "",
            "exact",
            json!({"transaction_sample_rate": "0.9"}),
        ),
    );
    let r = until(&url, &[], |r| header(r, "etag") == Some("\"exact\"")).await;
    assert_eq!(r.body, "{\"transaction_sample_rate\":\"0.9\"}\n");
    let text = s.telemetry().render();
    assert!(text.contains("apm_rs_agentcfg_documents 3"), "{text}");
    assert!(
        text.contains("apm_rs_agentcfg_refresh_total{outcome=\"ok\"}"),
        "{text}"
    );
}

type Handler = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// A minimal HTTP/1.1 stub: answers each request with `handler(body)` and
/// records the request bodies.
fn stub(
    handler: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    let handler: std::sync::Arc<Handler> = std::sync::Arc::new(handler);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { return };
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut r = BufReader::new(c);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            log.lock().unwrap().push(body.clone());
            let (status, answer) = handler(&body);
            let _ = write!(
                r.get_mut(),
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (addr, seen)
}

/// An HTTP stub answering every request with `status` (for 401/403 from Elasticsearch).
fn status_stub(status: u16) -> std::net::SocketAddr {
    stub(move |_| {
        (
            status,
            r#"{"error":{"type":"security_exception","reason":"denied"},"status":401}"#.into(),
        )
    })
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rejected_o132_p137() {
    for status in [401, 403] {
        let addr = status_stub(status);
        let hosts = format!("apm-server.agent.config.elasticsearch.hosts=[\"{addr}\"]");
        let s = TestServer::start(&[&hosts, "apm-server.agent.config.cache.expiration=1s"]);
        let url = format!("{}/config/v1/agents?service.name=x", s.url);
        let r = until(&url, &[], |r| r.status == 403).await;
        assert_eq!(r.status, 403, "{status}");
        assert_eq!(r.body, format!("{{\"error\":\"{MSG_INVALID_ES}\"}}\n"));
        assert_eq!(header(&r, "cache-control"), Some(CC_ERR));
    }
    // Any other status: not ready.
    let addr = status_stub(500);
    let hosts = format!("apm-server.agent.config.elasticsearch.hosts=[\"{addr}\"]");
    let s = TestServer::start(&[&hosts, "apm-server.agent.config.cache.expiration=1s"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get(&format!("{}/config/v1/agents?service.name=x", s.url), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, format!("{{\"error\":\"{MSG_NOT_READY}\"}}\n"));
}

/// A Kibana stub answering by service name.
fn kibana_stub() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    stub(|body| {
        let q: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        match q["service"]["name"].as_str().unwrap_or("") {
            "unauthorized" => (
                401,
                r#"{"statusCode":401,"error":"Unauthorized","message":"missing credentials"}"#.into(),
            ),
            "broken" => (500, "boom".into()),
            "missing" => (404, "{}".into()),
            _ => (
                200,
                r#"{"_id":"1","_source":{"etag":"k1","agent_name":"rum-js","settings":{"transaction_sample_rate":0.3,"capture_body":"all"}}}"#.into(),
            ),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kibana_fallback_o122_o125_p137() {
    let (kb, seen) = kibana_stub();
    let es_401 = status_stub(401);
    let kibana_host = format!("apm-server.kibana.host={kb}");
    let es_hosts = format!("output.elasticsearch.hosts=[\"{es_401}\"]");
    let s = TestServer::start(&[
        "apm-server.kibana.enabled=true",
        &kibana_host,
        "output.elasticsearch.enabled=false",
        &es_hosts,
        "apm-server.default_service_environment=default",
        "apm-server.agent.config.cache.expiration=1s",
        "apm-server.auth.secret_token=1234",
        "apm-server.rum.enabled=true",
    ]);
    let base = format!("{}/config/v1/agents", s.url);
    let token = ("Authorization", "Bearer 1234");
    // ES rejects the credentials; Kibana keeps answering (P.137).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = post(
        &base,
        br#"{"service":{"name":"opbeans-node","environment":"specified"}}"#.to_vec(),
        &[token],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        "{\"capture_body\":\"all\",\"transaction_sample_rate\":\"0.3\"}\n"
    );
    assert_eq!(header(&r, "etag"), Some("\"k1\""));
    // O.125: the query sent upstream.
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        r#"{"service":{"name":"opbeans-node","environment":"specified"},"etag":""}"#
    );
    let r = post(
        &base,
        br#"{"service":{"name":"opbeans-node"}}"#.to_vec(),
        &[token],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        r#"{"service":{"name":"opbeans-node","environment":"default"},"etag":""}"#
    );
    // Cached per name+environment.
    let n = seen.lock().unwrap().len();
    let r = get(&format!("{base}?service.name=opbeans-node"), &[token]).await;
    assert_eq!(r.status, 200);
    assert_eq!(seen.lock().unwrap().len(), n, "answered from the cache");
    // Anonymous: filtered like an ES answer.
    let r = get(&format!("{base}?service.name=anon"), &[]).await;
    assert_eq!(r.body, "{\"transaction_sample_rate\":\"0.3\"}\n");
    // Kibana 404 → no config.
    let r = get(&format!("{base}?service.name=missing"), &[token]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "{}\n"));
    assert_eq!(header(&r, "etag"), Some("\"-\""));
    // O.122: Kibana says Unauthorized.
    let r = get(&format!("{base}?service.name=unauthorized"), &[token]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        "{\"error\":\"APM Server is not authorized to query Kibana. Please configure apm-server.kibana.username and apm-server.kibana.password, and ensure the user has the necessary privileges.\"}\n"
    );
    assert_eq!(header(&r, "cache-control"), Some(CC_ERR));
    let r = get(&format!("{base}?service.name=unauthorized"), &[]).await;
    assert_eq!(r.body, "{\"error\":\"Unauthorized\"}\n");
    // Any other Kibana error: its text, or "service unavailable" for anonymous.
    let r = get(&format!("{base}?service.name=broken"), &[token]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "{\"error\":\"boom\"}\n"));
    let r = get(&format!("{base}?service.name=broken"), &[]).await;
    assert_eq!(r.body, "{\"error\":\"service unavailable\"}\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kibana_unreachable() {
    // A port with nothing listening.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kibana_host = format!("apm-server.kibana.host={dead}");
    let s = TestServer::start(&[
        "apm-server.kibana.enabled=true",
        &kibana_host,
        "output.elasticsearch.enabled=false",
        "output.elasticsearch.hosts=[\"127.0.0.1:1\"]",
    ]);
    let r = get(&format!("{}/config/v1/agents?service.name=x", s.url), &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.body
            .starts_with("{\"error\":\"sending request to kibana failed: "),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rum_cors_and_rate_limit() {
    let es = EsDouble::start();
    let s = server(
        &es,
        &[
            "apm-server.rum.enabled=true",
            "apm-server.auth.secret_token=1234",
            "apm-server.rum.allow_origins=[\"http://good\"]",
            "apm-server.auth.anonymous.rate_limit.event_limit=1",
            "apm-server.auth.anonymous.rate_limit.ip_limit=10",
        ],
    );
    let url = format!("{}/config/v1/rum/agents?service.name=x", s.url);
    let r = ready(
        &url,
        &[("Origin", "http://good"), ("Authorization", "Bearer 1234")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://good")
    );
    let r = get(&url, &[("Origin", "http://bad")]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("origin"), "{}", r.body);
    // Anonymous callers spend a token per request; with a burst of 1 the
    // second immediate request is limited.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&url, &[("Origin", "http://good")]).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}
