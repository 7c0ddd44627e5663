//! Self-monitoring through real listeners: a mixed intake run, then a
//! Prometheus scrape of the separate `monitoring.metrics_host` listener,
//! checking the accounting identity from the scraped text alone; plus the
//! expvar document on the main port.

mod common;

use common::{errors_payload, post, send, TestServer};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

/// Metric samples of a Prometheus text exposition: `name{labels}` → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of every sample of metric `name` (all label sets).
fn total(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v as u64)
        .sum()
}

async fn scrape(addr: std::net::SocketAddr) -> (String, BTreeMap<String, f64>) {
    let r = send(
        reqwest::Method::GET,
        &format!("http://{addr}/metrics"),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.headers
    );
    let m = parse(&r.body);
    (r.body, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_identity_from_scrape() {
    let srv = TestServer::start(&[
        "monitoring.metrics_host=127.0.0.1:0",
        "apm-server.max_event_size=300",
        "apm-server.auth.secret_token=1234",
        "apm-server.rum.enabled=true",
    ]);
    let addr = srv
        .server
        .as_ref()
        .and_then(|s| s.metrics_addr)
        .expect("metrics listener on");
    let url = format!("{}/intake/v2/events", srv.url);
    let auth = ("authorization", "Bearer 1234");

    // 1. valid events
    let r = post(&url, errors_payload(7, "svc", "python"), &[NDJSON, auth]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // 2. invalid lines among valid ones
    let meta = String::from_utf8(errors_payload(0, "svc", "python")).unwrap();
    let events =
        String::from_utf8(errors_payload(2, "svc", "python")).unwrap()[meta.len()..].to_string();
    let body = format!("{meta}{{ \"nope\" }}\n{{\"unknown\": {{}}}}\n{events}");
    let r = post(&url, body.into_bytes(), &[NDJSON, auth]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // 3. too-large lines
    let big = format!(
        "{{\"error\":{{\"id\":\"1\",\"exception\":{{\"message\":\"{}\"}}}}}}\n",
        "x".repeat(400)
    );
    let body = format!("{meta}{big}{big}{events}");
    let r = post(&url, body.into_bytes(), &[NDJSON, auth]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // 4. anonymous caller with an agent outside allow_agent → 403
    let r = post(&url, errors_payload(3, "svc", "python"), &[NDJSON]).await;
    assert_eq!(r.status, 403, "{}", r.body);
    // 5. a 401 (wrong token)
    let r = post(
        &url,
        errors_payload(1, "svc", "python"),
        &[NDJSON, ("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(r.status, 401);

    // Scrape until everything accepted has left the pipeline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, m) = loop {
        let (text, m) = scrape(addr).await;
        let accepted = total(&m, "apm_rs_events_accepted_total");
        let done = total(&m, "apm_rs_events_indexed_total")
            + total(&m, "apm_rs_events_failed_total")
            + total(&m, "apm_rs_events_discarded_total");
        if accepted == done || Instant::now() > deadline {
            break (text, m);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let received = total(&m, "apm_rs_events_received_total");
    let accepted = total(&m, "apm_rs_events_accepted_total");
    let rejected = total(&m, "apm_rs_events_rejected_total");
    let indexed = total(&m, "apm_rs_events_indexed_total");
    let failed = total(&m, "apm_rs_events_failed_total");
    let discarded = total(&m, "apm_rs_events_discarded_total");
    let in_flight = accepted as i64 - (indexed + failed + discarded) as i64;
    assert!(received > 0 && accepted > 0 && rejected > 0, "{text}");
    assert_eq!(
        received,
        rejected + accepted,
        "received = rejected + accepted\n{text}"
    );
    assert_eq!(
        in_flight, 0,
        "accepted = indexed + failed + discarded + in_flight\n{text}"
    );
    assert_eq!(accepted, 7 + 2 + 2, "{text}");
    assert_eq!(indexed, accepted, "{text}");
    // Rejections by reason.
    let reason = |r: &str| {
        m.get(&format!("apm_rs_events_rejected_total{{reason=\"{r}\"}}"))
            .copied()
            .unwrap_or(0.0) as u64
    };
    assert_eq!(reason("invalid"), 2, "{text}");
    assert_eq!(reason("too_large"), 2, "{text}");
    assert!(reason("unauthorized") >= 1, "{text}");
    // Requests by route and status.
    for (status, n) in [("202", 1.0), ("400", 2.0), ("403", 1.0), ("401", 1.0)] {
        assert_eq!(
            m.get(&format!(
                "apm_rs_http_requests_total{{route=\"/intake/v2/events\",status=\"{status}\"}}"
            )),
            Some(&n),
            "{status}\n{text}"
        );
    }
    // Stage gauges, memory, and the rate-limit counter are exported.
    for name in [
        "apm_rs_stage_inbox_depth",
        "apm_rs_stage_inbox_capacity",
        "apm_rs_stage_instances",
        "apm_rs_stage_events_processed_total",
        "apm_rs_stage_busy_nanoseconds_total",
        "apm_rs_memory_budget_in_use_bytes",
        "apm_rs_memory_budget_limit_bytes",
        "apm_rs_rate_limited_requests_total",
    ] {
        assert!(
            text.contains(&format!("\n{name}")),
            "{name} missing\n{text}"
        );
    }
    // The telemetry snapshot agrees with the scrape.
    let acc = srv.telemetry().accounting();
    assert!(acc.balanced());
    assert_eq!(acc.received, received);

    // The metrics listener serves nothing else, and the main port has no /metrics.
    let r = send(
        reqwest::Method::GET,
        &format!("http://{addr}/"),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send(
        reqwest::Method::GET,
        &format!("{}/metrics", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener_off_by_default_and_expvar() {
    let srv = TestServer::start(&["apm-server.expvar.enabled=true"]);
    assert!(srv.server.as_ref().unwrap().metrics_addr.is_none());
    let url = format!("{}/intake/v2/events", srv.url);
    let r = post(&url, errors_payload(4, "svc", "python"), &[NDJSON]).await;
    assert_eq!(r.status, 202);
    let r = send(
        reqwest::Method::GET,
        &format!("{}/intake/v2/events", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 400);

    // E.51: agent config without service.name counts as an invalid query.
    let r = send(
        reqwest::Method::GET,
        &format!("{}/config/v1/agents", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 400);

    let r = send(
        reqwest::Method::GET,
        &format!("{}/debug/vars", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["apm-server.acm.response.errors.invalidquery"], 1);
    assert_eq!(v["apm-server.processor.stream.accepted"], 4);
    assert_eq!(v["apm-server.processor.stream.errors.invalid"], 0);
    assert_eq!(v["apm-server.processor.stream.errors.toolarge"], 0);
    assert_eq!(v["apm-server.server.request.count"], 2);
    assert_eq!(v["apm-server.server.response.count"], 2);
    assert_eq!(v["apm-server.server.response.valid.count"], 1);
    assert_eq!(v["apm-server.server.response.valid.accepted"], 1);
    assert_eq!(v["apm-server.server.response.errors.count"], 1);

    // Custom path; disabled → 404.
    let srv = TestServer::start(&[
        "apm-server.expvar.enabled=true",
        "apm-server.expvar.url=/vars",
    ]);
    let r = send(
        reqwest::Method::GET,
        &format!("{}/vars", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let srv = TestServer::start(&[]);
    let r = send(
        reqwest::Method::GET,
        &format!("{}/debug/vars", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
}
