//! RUM and anonymous access through the real server: kill switch, CORS,
//! allow lists, per-IP rate limits and trusted proxies.

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

fn rum_payload(n: usize, service: &str) -> Vec<u8> {
    errors_payload(n, service, "rum-js")
}

#[tokio::test]
async fn anonymous_rum_intake_and_kill_switch_order() {
    // E.47: RUM on + anonymous on
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.anonymous.enabled=true",
        "apm-server.auth.secret_token=abc",
    ]);
    let r = post(
        &format!("{}/intake/v2/rum/events", srv.url),
        vec![],
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 202);
    // E.48: RUM on + token → anonymous implied
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=1234",
    ]);
    let r = post(
        &format!("{}/intake/v2/rum/events?verbose", srv.url),
        rum_payload(2, "web"),
        &[NDJSON],
    )
    .await;
    assert_eq!((r.status, r.accepted()), (202, 2), "{}", r.body);
    // anonymous backend agent posting to the backend endpoint: 403 in the stream result
    let r = post(
        &format!("{}/intake/v2/events", srv.url),
        errors_payload(1, "svc", "python"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"cannot handle stream: cannot process batch: unauthorized: anonymous access not permitted for agent \"python\""}]})
    );
    // anonymous explicitly off with RUM on: RUM agents get 401
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=1234",
        "apm-server.auth.anonymous.enabled=false",
    ]);
    let r = post(
        &format!("{}/intake/v2/rum/events", srv.url),
        rum_payload(1, "web"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn allow_service_checks_every_event() {
    // R.152 (per-event service override) and a plain denied service
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=1234",
        "apm-server.auth.anonymous.allow_service=[allowed]",
    ]);
    let url = format!("{}/intake/v2/rum/events", srv.url);
    let r = post(&url, rum_payload(1, "other"), &[NDJSON]).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["errors"][0]["message"], "cannot handle stream: cannot process batch: unauthorized: anonymous access not permitted for service \"other\"");
    assert_eq!(r.headers["connection"], "close");
    let body = concat!(
        r#"{"metadata":{"service":{"name":"allowed","agent":{"name":"rum-js","version":"5.0.0"}}}}"#,
        "\n",
        r#"{"transaction":{"id":"0123456789abcdef","trace_id":"0123456789abcdef0123456789abcdef","type":"page-load","duration":10,"span_count":{"started":0},"context":{"service":{"name":"disallowed"}}}}"#,
        "\n",
    );
    let r = post(
        &url,
        body.as_bytes().to_vec(),
        &[NDJSON, ("accept", "text/plain")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body.trim_end(),
        r#"{"accepted":0,"errors":[{"message":"cannot handle stream: cannot process batch: unauthorized: anonymous access not permitted for service \"disallowed\""}]}"#
    );
}

#[tokio::test]
async fn cors_preflight_and_origin_checks() {
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.rum.allow_origins=[\"w*yz\", \"https://ok.example\"]",
        "apm-server.rum.allow_headers=[stick, door]",
        "apm-server.response_headers={both: all_value}",
        "apm-server.rum.response_headers={only_rum: rum_value, both: rum_value}",
    ]);
    for path in ["/intake/v2/rum/events", "/intake/v3/rum/events"] {
        let url = format!("{}{path}", srv.url);
        // M.106 / M.110
        let r = send(
            reqwest::Method::OPTIONS,
            &url,
            vec![],
            &[("origin", "wxyz")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "");
        assert_eq!(r.headers["access-control-allow-origin"], "wxyz");
        assert_eq!(r.headers["access-control-max-age"], "3600");
        assert_eq!(r.headers["vary"], "Origin");
        assert_eq!(r.headers["access-control-allow-methods"], "POST, OPTIONS");
        assert_eq!(
            r.headers["access-control-allow-headers"],
            "stick, door, Content-Type, Content-Encoding, Accept"
        );
        assert_eq!(r.headers["access-control-expose-headers"], "Etag");
        // M.107: disallowed origin still gets 200 but no Allow-Origin
        let r = send(reqwest::Method::OPTIONS, &url, vec![], &[("origin", "xyz")]).await;
        assert_eq!(r.status, 200);
        assert!(r.headers.get("access-control-allow-origin").is_none());
        // E.49 / M.109: disallowed origin on POST → 403
        let r = post(&url, vec![], &[NDJSON, ("origin", "bar")]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json(),
            json!({"error": "forbidden request: origin: 'bar' is not allowed"})
        );
        // no Origin at all with a restrictive list → 403
        let r = post(&url, vec![], &[NDJSON]).await;
        assert_eq!(r.status, 403);
        // M.108: allowed origin echoed on the actual response, R.153 headers
        let r = post(&url, vec![], &[NDJSON, ("origin", "https://ok.example")]).await;
        assert_eq!(r.status, 202);
        assert_eq!(
            r.headers["access-control-allow-origin"],
            "https://ok.example"
        );
        let both: Vec<_> = r
            .headers
            .get_all("both")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(both, ["all_value", "rum_value"]);
        assert_eq!(r.headers["only_rum"], "rum_value");
    }
    // R.153: root has the global header only
    let r = send(reqwest::Method::GET, &format!("{}/", srv.url), vec![], &[]).await;
    let both: Vec<_> = r.headers.get_all("both").iter().collect();
    assert_eq!(both.len(), 1);
    assert!(r.headers.get("only_rum").is_none());
    // a preflight succeeds even when RUM is disabled, as in apm-server
    let off = TestServer::start(&[]);
    let r = send(
        reqwest::Method::OPTIONS,
        &format!("{}/intake/v2/rum/events", off.url),
        vec![],
        &[("origin", "x")],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn rate_limit_cases() {
    // K.96: event_limit 5 (capacity 15), ip_limit 2
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=abc123",
        "apm-server.auth.anonymous.rate_limit.event_limit=5",
        "apm-server.auth.anonymous.rate_limit.ip_limit=2",
        "pipeline.rate.instances=1",
    ]);
    let url = format!("{}/intake/v2/rum/events?verbose", srv.url);
    let r = post(
        &url,
        rum_payload(14, "web"),
        &[NDJSON, ("x-forwarded-for", "10.11.12.13")],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    for _ in 0..3 {
        let r = post(
            &url,
            rum_payload(5, "web"),
            &[NDJSON, ("x-forwarded-for", "10.11.12.14")],
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let r = post(
        &url,
        rum_payload(10, "web"),
        &[NDJSON, ("x-forwarded-for", "10.11.12.15")],
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    let msg = r.json();
    let text = msg
        .get("error")
        .or_else(|| {
            msg["errors"]
                .as_array()
                .and_then(|e| e.last())
                .map(|e| &e["message"])
        })
        .cloned()
        .unwrap();
    assert!(
        text == "too many requests: rate limit exceeded"
            || text == "cannot handle stream: cannot process batch: rate limit exceeded",
        "{text}"
    );
    // authenticated callers are never limited
    for _ in 0..5 {
        let r = post(
            &url,
            rum_payload(10, "web"),
            &[
                NDJSON,
                ("x-forwarded-for", "10.11.12.15"),
                ("authorization", "Bearer abc123"),
            ],
        )
        .await;
        assert_eq!(r.status, 202);
    }
}

#[tokio::test]
async fn cycling_new_ips_never_yields_fresh_buckets() {
    // Scaled version of "10,000 IPs against ip_limit 1,000" through HTTP.
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=abc",
        "apm-server.auth.anonymous.rate_limit.event_limit=1",
        "apm-server.auth.anonymous.rate_limit.ip_limit=50",
        "pipeline.rate.instances=1",
    ]);
    let url = format!("{}/intake/v2/rum/events", srv.url);
    let body = rum_payload(2, "web"); // 1 + 2 tokens = a whole bucket
    let mut first = 0;
    let mut later_ok = 0;
    for i in 0..500u32 {
        let ip = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        let r = post(
            &url,
            body.clone(),
            &[NDJSON, ("x-forwarded-for", ip.as_str())],
        )
        .await;
        if i < 50 {
            first += u32::from(r.status == 202);
        } else if r.status == 202 {
            later_ok += 1;
        }
    }
    assert_eq!(first, 50, "the first ip_limit IPs get full buckets");
    assert!(
        later_ok <= 45,
        "reused buckets are depleted: {later_ok} of 450 new IPs passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_ip_does_not_slow_other_ips_on_its_shard() {
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=abc",
        "apm-server.auth.anonymous.rate_limit.event_limit=10",
        "pipeline.rate.instances=1",
    ]);
    let url = format!("{}/intake/v2/rum/events?verbose", srv.url);
    let r = post(
        &url,
        rum_payload(29, "web"),
        &[NDJSON, ("x-forwarded-for", "1.1.1.1")],
    )
    .await;
    assert_eq!(r.status, 202);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t0 = Instant::now();
    let (u, b) = (url.clone(), rum_payload(8, "web"));
    let slow = tokio::spawn(async move {
        let r = post(&u, b, &[NDJSON, ("x-forwarded-for", "1.1.1.1")]).await;
        (r.status, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = post(
        &url,
        rum_payload(5, "web"),
        &[NDJSON, ("x-forwarded-for", "2.2.2.2")],
    )
    .await;
    let other = t0.elapsed();
    assert_eq!(r.status, 202);
    let (status, waited) = slow.await.unwrap();
    assert_eq!(
        status, 202,
        "the waiting request is slowed down, not refused"
    );
    assert!(
        other < waited,
        "other IP answered at {other:?}, the waiting one at {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_across_concurrent_requests_of_one_ip() {
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=abc",
        "apm-server.auth.anonymous.rate_limit.event_limit=10",
    ]);
    let url = format!("{}/intake/v2/rum/events?verbose", srv.url);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let u = url.clone();
        tasks.push(tokio::spawn(async move {
            let r = post(
                &u,
                rum_payload(10, "web"),
                &[NDJSON, ("x-forwarded-for", "9.9.9.9")],
            )
            .await;
            (
                r.status,
                if r.status == 202 || r.status == 429 && r.body.contains("accepted") {
                    r.accepted()
                } else {
                    0
                },
            )
        }));
    }
    let mut accepted = 0;
    let mut limited = 0;
    for t in tasks {
        let (s, a) = t.await.unwrap();
        accepted += a;
        limited += u64::from(s == 429);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // capacity 30 plus 10 tokens/s of refill, each request also costs 1 token
    let budget = 30.0 + 10.0 * elapsed;
    assert!(
        (accepted as f64) <= budget,
        "accepted {accepted} events in {elapsed:.2}s"
    );
    assert!(limited > 0, "some concurrent requests are refused");
}

#[tokio::test]
async fn trusted_proxies_stop_spoofed_client_ips() {
    // The peer (127.0.0.1) is not a trusted proxy: forwarding headers are
    // ignored, so every request shares the peer's bucket.
    for (trusted, second_status) in [("[\"10.0.0.0/8\"]", 429), ("[]", 202)] {
        let srv = TestServer::start(&[
            "apm-server.rum.enabled=true",
            "apm-server.auth.secret_token=abc",
            "apm-server.auth.anonymous.rate_limit.event_limit=1",
            &format!("apm-server.auth.anonymous.trusted_proxies={trusted}"),
        ]);
        let url = format!("{}/intake/v2/rum/events", srv.url);
        let r = post(
            &url,
            rum_payload(2, "web"),
            &[NDJSON, ("x-forwarded-for", "1.1.1.1")],
        )
        .await;
        assert_eq!(r.status, 202);
        let mut last = 0;
        for h in [
            ("x-forwarded-for", "2.2.2.2"),
            ("x-real-ip", "3.3.3.3"),
            ("forwarded", "for=4.4.4.4"),
        ] {
            last = post(&url, rum_payload(2, "web"), &[NDJSON, h]).await.status;
            if second_status == 429 {
                assert_eq!(last, 429, "{h:?} must not change the bucket");
            }
        }
        assert_eq!(last, second_status, "trusted={trusted}");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_only_the_header_it_writes_decides_the_bucket() {
    // The peer (127.0.0.1) is the trusted proxy; like nginx it appends the
    // client to X-Forwarded-For and passes the client's own X-Real-Ip and
    // Forwarded through. Those must not move the client to another bucket.
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=abc",
        "apm-server.auth.anonymous.rate_limit.event_limit=1",
        "apm-server.auth.anonymous.trusted_proxies=[\"127.0.0.1\"]",
    ]);
    let url = format!("{}/intake/v2/rum/events", srv.url);
    let r = post(
        &url,
        rum_payload(2, "web"),
        &[NDJSON, ("x-forwarded-for", "5.5.5.5")],
    )
    .await;
    assert_eq!(r.status, 202);
    for h in [
        [("x-forwarded-for", "5.5.5.5"), ("x-real-ip", "7.7.7.7")],
        [("x-forwarded-for", "5.5.5.5"), ("forwarded", "for=8.8.8.8")],
        // a client-written entry left of the one the proxy appended
        [
            ("x-forwarded-for", "9.9.9.9, 5.5.5.5"),
            ("x-real-ip", "7.7.7.7"),
        ],
    ] {
        let mut headers = vec![NDJSON];
        headers.extend(h);
        let r = post(&url, rum_payload(2, "web"), &headers).await;
        assert_eq!(r.status, 429, "{h:?} must not change the bucket");
    }
    // another client behind the same proxy has its own bucket
    let r = post(
        &url,
        rum_payload(2, "web"),
        &[NDJSON, ("x-forwarded-for", "6.6.6.6")],
    )
    .await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn an_unreadable_authorization_header_is_401_not_anonymous() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // anonymous RUM is allowed, so a header taken for absent would be a 202
    let srv = TestServer::start(&[
        "apm-server.rum.enabled=true",
        "apm-server.auth.secret_token=abc",
    ]);
    let body = rum_payload(1, "web");
    let mut req = format!(
        "POST /intake/v2/rum/events HTTP/1.1\r\nHost: apm\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\nContent-Length: {}\r\nAuthorization: Bearer ab",
        body.len()
    )
    .into_bytes();
    req.push(0xe9);
    req.extend_from_slice(b"\r\n\r\n");
    req.extend_from_slice(&body);
    let addr = srv.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&req).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("authentication failed"), "{answer}");
}
