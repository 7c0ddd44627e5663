//! Intake v2 through the real HTTP server: corpus payloads, the status codes
//! and bodies apm-server answers (docs/intake.md), and its handler cases for
//! bodies, encodings, limits and errors.

mod common;
use common::*;
use serde_json::json;

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");
const JSON_ACCEPT: (&str, &str) = ("accept", "application/json");

/// What apm-server answers for a corpus file: (status, accepted).
fn expected(file: &str, text: &str) -> (u16, u64) {
    match file {
        "invalid-event.ndjson" | "invalid-json-event.ndjson" => (400, 1),
        "invalid-event-type.ndjson"
        | "invalid-json-metadata.ndjson"
        | "invalid-metadata.ndjson"
        | "invalid-metadata-2.ndjson" => (400, 0),
        _ => (
            202,
            text.lines().filter(|l| !l.is_empty()).count() as u64 - 1,
        ),
    }
}

/// Approved response bodies (intake-responses/) of the corpus files that have one.
fn approval(file: &str) -> Option<&'static str> {
    Some(match file {
        "invalid-event.ndjson" => "InvalidEvent",
        "invalid-json-event.ndjson" => "InvalidJSONEvent",
        "invalid-json-metadata.ndjson" => "InvalidJSONMetadata",
        "invalid-metadata.ndjson" => "InvalidMetadata",
        "invalid-metadata-2.ndjson" => "InvalidMetadata2",
        "invalid-event-type.ndjson" => "UnrecognizedEvent",
        "errors.ndjson" => "Success",
        _ => return None,
    })
}

/// Compares a response body with an approval; decode-error messages quoting
/// Go's parser match on the `decode error: data read error: ` prefix.
fn assert_body_matches(got: &serde_json::Value, want: &serde_json::Value, what: &str) {
    assert_eq!(got["accepted"], want["accepted"], "{what}: accepted");
    let ge = got["errors"].as_array().cloned().unwrap_or_default();
    let we = want["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(ge.len(), we.len(), "{what}: errors {got}");
    for (g, w) in ge.iter().zip(&we) {
        assert_eq!(g["document"], w["document"], "{what}: document");
        let (gm, wm) = (
            g["message"].as_str().unwrap(),
            w["message"].as_str().unwrap(),
        );
        const DECODE: &str = "decode error: data read error: ";
        if wm.starts_with(DECODE) {
            assert!(gm.starts_with(DECODE), "{what}: message {gm:?}");
        } else {
            assert_eq!(gm, wm, "{what}: message");
        }
    }
}

#[tokio::test]
async fn corpus_intake_v2_plain_and_gzip() {
    let Some(corpus) = corpus("corpus_intake_v2_plain_and_gzip") else {
        return;
    };
    let srv = TestServer::start(&[]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let mut files: Vec<_> = std::fs::read_dir(corpus.join("intake-v2"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 29, "corpus has the 29 intake-v2 files");
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let data = std::fs::read(&path).unwrap();
        let (status, accepted) = expected(&name, &String::from_utf8_lossy(&data));
        for (mode, body, enc) in [
            ("plain", data.clone(), None),
            ("gzip", gzip(&data), Some(("content-encoding", "gzip"))),
        ] {
            let mut headers = vec![NDJSON, JSON_ACCEPT];
            headers.extend(enc);
            let r = post(&url, body, &headers).await;
            assert_eq!(r.status, status, "{name} ({mode}): {}", r.body);
            assert_eq!(r.accepted(), accepted, "{name} ({mode}): {}", r.body);
            if let Some(a) = approval(&name) {
                let want: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(
                        corpus.join(format!("intake-responses/{a}.approved.json")),
                    )
                    .unwrap(),
                )
                .unwrap();
                assert_body_matches(&r.json(), &want, &format!("{name} ({mode})"));
            }
        }
    }
}

#[tokio::test]
async fn handler_cases() {
    let srv = TestServer::start(&[]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let errors = errors_payload(5, "svc", "python");
    let h = [NDJSON, JSON_ACCEPT];

    // C.13 method
    let r = send(reqwest::Method::GET, &url, vec![], &[JSON_ACCEPT]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"only POST requests are supported"}]})
    );
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(r.headers["content-type"], "application/json");
    // C.14 content type
    let r = post(
        &url,
        errors.clone(),
        &[("content-type", "application/json"), JSON_ACCEPT],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"invalid content type: 'application/json'"}]})
    );
    // C.15 empty body
    let r = post(&url, vec![], &h).await;
    assert_eq!((r.status, r.json()), (202, json!({"accepted":0})));
    // C.16 / C.17 deflate
    let r = post(
        &url,
        errors.clone(),
        &[NDJSON, JSON_ACCEPT, ("content-encoding", "deflate")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"data decoding error: zlib: invalid header"}]})
    );
    let r = post(
        &url,
        zlib(&errors),
        &[NDJSON, JSON_ACCEPT, ("content-encoding", "deflate")],
    )
    .await;
    assert_eq!((r.status, r.json()), (202, json!({"accepted":5})));
    // C.18 / C.19 gzip
    let r = post(
        &url,
        errors.clone(),
        &[NDJSON, JSON_ACCEPT, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"data decoding error: gzip: invalid header"}]})
    );
    let r = post(
        &url,
        gzip(&errors),
        &[NDJSON, JSON_ACCEPT, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!((r.status, r.json()), (202, json!({"accepted":5})));
    // sniffed compression without Content-Encoding (B.10, B.11)
    let r = post(&url, gzip(&errors), &h).await;
    assert_eq!(r.accepted(), 5);
    let r = post(&url, zlib(&errors), &h).await;
    assert_eq!(r.accepted(), 5);
    // Python agent's empty flush marked gzip
    let r = post(
        &format!("{}/intake/v2/events?flushed=true", srv.url),
        vec![],
        &[NDJSON, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, 202);
    // C.24 unknown object type between valid events
    let meta = String::from_utf8(errors_payload(0, "svc", "python")).unwrap();
    let body = format!(
        "{meta}{{ \"invalid-json\" }}\n{}",
        String::from_utf8_lossy(&errors_payload(1, "svc", "python")[meta.len()..])
    );
    let r = post(&url, body.into_bytes(), &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":1,"errors":[{"message":"did not recognize object type: \"invalid-json\"","document":"{ \"invalid-json\" }"}]})
    );
    // C.27 first line not metadata
    let r = post(&url, b"{\"not\": \"metadata\"}\n".to_vec(), &h).await;
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"\"metadata\" or \"m\" required","document":"{\"not\": \"metadata\"}"}]})
    );
    // C.30 content types accepted
    for ct in [
        None,
        Some("application/x-ndjson"),
        Some("application/x-ndjson; charset=utf-8"),
        Some("application/ndjson"),
    ] {
        let mut hs = vec![JSON_ACCEPT];
        hs.extend(ct.map(|c| ("content-type", c)));
        let r = post(&url, errors.clone(), &hs).await;
        assert_eq!(r.status, 202, "{ct:?}");
    }
    // C.31 no verbose → empty body
    let r = post(&format!("{}/intake/v2/events", srv.url), errors.clone(), &h).await;
    assert_eq!((r.status, r.body.as_str()), (202, ""));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    // D.42 metadata without trailing newline / with it
    let m = meta.trim_end().to_string();
    let r = post(&url, m.clone().into_bytes(), &h).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"EOF while reading metadata","document": m}]})
    );
    let r = post(&url, meta.clone().into_bytes(), &h).await;
    assert_eq!((r.status, r.json()), (202, json!({"accepted":0})));
    // D.43 empty first line
    let r = post(&url, b"\n".to_vec(), &h).await;
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"\"metadata\" or \"m\" required"}]})
    );
    // text/plain compact JSON without Accept
    let r = post(&url, b"\n".to_vec(), &[NDJSON, ("accept", "text/plain")]).await;
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        r.body,
        "{\"accepted\":0,\"errors\":[{\"message\":\"\\\"metadata\\\" or \\\"m\\\" required\"}]}\n"
    );
}

#[tokio::test]
async fn too_large_lines_and_error_limits() {
    // C.20: max_event_size 10 cuts the metadata line
    let srv = TestServer::start(&["apm-server.max_event_size=10"]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let r = post(
        &url,
        errors_payload(5, "svc", "python"),
        &[NDJSON, JSON_ACCEPT],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"accepted":0,"errors":[{"message":"event exceeded the permitted size","document":"{\"metadata"}]})
    );

    // D.35 analogue: one too-large event line, others accepted; at most 5 errors listed
    let srv = TestServer::start(&["apm-server.max_event_size=300"]);
    let url = format!("{}/intake/v2/events?verbose", srv.url);
    let mut body = errors_payload(2, "svc", "python");
    let big = format!(
        "{{\"error\":{{\"id\":\"1\",\"exception\":{{\"message\":\"{}\"}}}}}}\n",
        "x".repeat(400)
    );
    for _ in 0..7 {
        body.extend_from_slice(big.as_bytes());
    }
    body.extend_from_slice(
        &errors_payload(1, "svc", "python")[errors_payload(0, "svc", "python").len()..],
    );
    let r = post(&url, body, &[NDJSON, JSON_ACCEPT]).await;
    assert_eq!(r.status, 400);
    let j = r.json();
    assert_eq!(j["accepted"], 3);
    let errs = j["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 5, "only the first five errors are listed");
    assert_eq!(errs[0]["message"], "event exceeded the permitted size");
    assert_eq!(errs[0]["document"].as_str().unwrap().len(), 300);
}

#[tokio::test]
async fn root_and_not_found() {
    let srv = TestServer::start(&["apm-server.response_headers={X-Both: [a]}"]);
    let r = send(
        reqwest::Method::GET,
        &format!("{}/", srv.url),
        vec![],
        &[JSON_ACCEPT],
    )
    .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["version"], apm_rs::version::COMPAT_VERSION);
    assert_eq!(j["publish_ready"], true);
    assert!(j["build_date"].is_string() && j["build_sha"].is_string());
    assert_eq!(r.headers["x-both"], "a");
    let keys: Vec<_> = j.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["build_date", "build_sha", "publish_ready", "version"]
    );
    let r = send(reqwest::Method::HEAD, &format!("{}/", srv.url), vec![], &[]).await;
    assert_eq!(r.status, 200);
    for m in [reqwest::Method::PUT, reqwest::Method::POST] {
        let r = send(m, &format!("{}/", srv.url), vec![], &[]).await;
        assert_eq!(r.status, 405);
        assert_eq!(
            r.json(),
            json!({"error":"method not supported: this is the server information endpoint; did you mean to send data to another endpoint instead?"})
        );
    }
    let r = send(
        reqwest::Method::GET,
        &format!("{}/intake/v2/events/", srv.url),
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error":"404 page not found"}));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert!(
        r.headers.get("x-both").is_none(),
        "404 has no custom headers"
    );
}

#[tokio::test]
async fn auth_and_rum_kill_switch() {
    let srv = TestServer::start(&["apm-server.auth.secret_token=1234"]);
    // E.44
    let r = post(
        &format!("{}/intake/v2/events", srv.url),
        errors_payload(1, "s", "python"),
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"error": apm_rs::auth::MSG_MISSING}));
    // E.45
    let r = send(
        reqwest::Method::GET,
        &format!("{}/intake/v2/events", srv.url),
        vec![],
        &[("authorization", "Bearer 1234")],
    )
    .await;
    assert_eq!(r.status, 400);
    // token ok
    let r = post(
        &format!("{}/intake/v2/events?verbose", srv.url),
        errors_payload(2, "s", "python"),
        &[NDJSON, ("authorization", "Bearer 1234")],
    )
    .await;
    assert_eq!((r.status, r.accepted()), (202, 2));
    // N.114 root without / with credentials
    let r = send(reqwest::Method::GET, &format!("{}/", srv.url), vec![], &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let r = send(
        reqwest::Method::GET,
        &format!("{}/", srv.url),
        vec![],
        &[("authorization", "Bearer 1234")],
    )
    .await;
    assert!(r.body.contains("build_date"));
    // RUM off with a token: authentication (401) is checked before the RUM
    // kill switch
    let r = post(
        &format!("{}/intake/v2/rum/events", srv.url),
        vec![],
        &[NDJSON],
    )
    .await;
    assert_eq!(r.status, 401);
    // E.46 default config: kill switch
    let srv = TestServer::start(&[]);
    for path in ["/intake/v2/rum/events", "/intake/v3/rum/events"] {
        let r = post(&format!("{}{path}", srv.url), vec![], &[NDJSON]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.json(),
            json!({"error": "forbidden request: RUM endpoint is disabled. Configure the `apm-server.rum` section in apm-server.yml to enable ingestion of RUM events. If you are not using the RUM agent, you can safely ignore this error."})
        );
    }
}

#[tokio::test]
async fn slow_body_past_read_timeout_gets_503() {
    let srv = TestServer::start(&["apm-server.read_timeout=1s"]);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let meta = errors_payload(1, "slow", "nodejs");
    let feeder = tokio::spawn(async move {
        let _ = tx.send(Ok(meta)).await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let _ = tx.send(Ok(b"\n".to_vec())).await;
    });
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let r = client()
        .post(format!("{}/intake/v2/events", srv.url))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let j: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(j, json!({"error": "request timed out"}));
    feeder.abort();
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
