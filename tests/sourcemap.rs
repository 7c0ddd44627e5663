//! Source mapping (docs/sourcemaps.md; upstream cases Q): frame rewriting against the
//! corpus maps, the store against the Elasticsearch double (missing,
//! malformed and oversized maps, unreachable and silent Elasticsearch), and
//! the upload API followed by RUM events through HTTP.

mod common;
#[path = "support/frames.rs"]
mod frames;

use apm_rs::config::{self, Config};
use apm_rs::sourcemap::frame::apply_sourcemaps;
use apm_rs::sourcemap::{FramePatterns, ParsedMap, Store};
use base64::Engine;
use common::{corpus, post, TestServer};
use es_double::EsDouble;
use frames::{InMemory, StackFrame};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn bundle_map() -> Option<Vec<u8>> {
    let c = corpus("sourcemap")?;
    Some(std::fs::read(c.join("sourcemap/bundle.js.map")).expect("bundle.js.map"))
}

fn frame(abs_path: &str, lineno: i64, colno: i64, function: &str) -> StackFrame {
    StackFrame {
        abs_path: abs_path.into(),
        filename: abs_path.into(),
        lineno: Some(lineno),
        colno: Some(colno),
        function: function.into(),
        ..Default::default()
    }
}

fn in_memory(map: &[u8]) -> InMemory {
    let mut m = InMemory::default();
    m.insert(
        "service",
        "1",
        "bundle.js",
        ParsedMap::parse(map).expect("parse"),
    );
    m
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn q139_q140_untouched_frames() {
    let Some(map) = bundle_map() else { return };
    let src = in_memory(&map);
    // no service version: untouched
    let mut f = vec![frame("bundle.js", 1, 7, "f")];
    let before = f.clone();
    assert_eq!(apply_sourcemaps(&mut f, "service", "", &src, soon()), 0);
    assert_eq!(f, before);
    // line 0: unresolvable, no error
    let mut f = vec![frame("bundle.js", 0, 0, "f")];
    let before = f.clone();
    assert_eq!(apply_sourcemaps(&mut f, "service", "1", &src, soon()), 0);
    assert_eq!(f, before);
    // no colno: not considered
    let mut f = vec![StackFrame {
        colno: None,
        ..frame("bundle.js", 1, 7, "f")
    }];
    let before = f.clone();
    apply_sourcemaps(&mut f, "service", "1", &src, soon());
    assert_eq!(f, before);
}

#[test]
fn q141_mapped_frame() {
    let Some(map) = bundle_map() else { return };
    let src = in_memory(&map);
    let mut f = vec![frame("bundle.js", 1, 7, "original function")];
    assert_eq!(apply_sourcemaps(&mut f, "service", "1", &src, soon()), 1);
    let f = &f[0];
    assert_eq!(f.filename, "webpack:///bundle.js");
    assert_eq!((f.lineno, f.colno), (Some(1), Some(9)));
    assert_eq!(f.function, "<anonymous>");
    assert_eq!(
        f.context_line,
        "/******/ (function(modules) { // webpackBootstrap"
    );
    assert!(f.pre_context.is_empty());
    assert_eq!(f.post_context.len(), 5);
    assert!(f.sourcemap_updated);
    assert!(f.sourcemap_error.is_empty());
    let o = f.original.as_ref().expect("original");
    assert_eq!(o.abs_path, "bundle.js");
    assert_eq!(o.filename, "bundle.js");
    assert_eq!((o.lineno, o.colno), (Some(1), Some(7)));
    assert_eq!(o.function, "original function");
}

#[test]
fn q142_log_frame_context() {
    let Some(map) = bundle_map() else { return };
    let src = in_memory(&map);
    let mut f = vec![frame("bundle.js", 1, 23, "f")];
    apply_sourcemaps(&mut f, "service", "1", &src, soon());
    let f = &f[0];
    assert!(f.sourcemap_updated);
    assert_eq!((f.lineno, f.colno), (Some(5), Some(0)));
    assert_eq!(f.pre_context.len(), 4);
    assert_eq!(f.post_context.len(), 5);
}

#[test]
fn q143_function_names_shift_by_one_frame() {
    let Some(map) = bundle_map() else { return };
    let src = in_memory(&map);
    let mut f = vec![
        frame("bundle.js", 1, 67, "a"),
        frame("bundle.js", 1, 67, "b"),
    ];
    assert_eq!(apply_sourcemaps(&mut f, "service", "1", &src, soon()), 2);
    for x in &f {
        assert_eq!((x.lineno, x.colno), (Some(13), Some(0)));
    }
    assert_eq!(f[1].function, "<anonymous>");
    assert_eq!(f[0].function, "exports");
    // an unmapped frame in between neither receives nor advances the carry
    let mut f = vec![
        frame("bundle.js", 1, 67, "a"),
        frame("other.js", 1, 1, "keep"),
        frame("bundle.js", 1, 67, "b"),
    ];
    apply_sourcemaps(&mut f, "service", "1", &src, soon());
    assert_eq!(f[2].function, "<anonymous>");
    assert_eq!(f[1].function, "keep");
    assert!(f[1]
        .sourcemap_error
        .starts_with("unable to find sourcemap.url"));
    assert_eq!(f[0].function, "exports");
}

#[test]
fn q149_q150_library_and_exclude_flags() {
    let p = FramePatterns::new("foo", "^/webpack").expect("patterns");
    let mk = |lib: bool, filename: &str, abs: &str| StackFrame {
        library_frame: lib,
        filename: filename.into(),
        abs_path: abs.into(),
        ..Default::default()
    };
    let mut f = vec![
        mk(true, "foo.go", ""),
        mk(false, "", "foobar.go"),
        mk(true, "bar.go", ""),
        mk(true, "", ""),
        mk(false, "/webpack/x.js", "/foo"),
    ];
    p.mark_library(&mut f);
    p.mark_exclude(&mut f);
    let lib: Vec<(bool, Option<bool>)> = f
        .iter()
        .map(|x| {
            (
                x.library_frame,
                x.original.as_ref().and_then(|o| o.library_frame),
            )
        })
        .collect();
    assert_eq!(
        lib,
        vec![
            (true, Some(true)),
            (true, Some(false)),
            (false, Some(true)),
            (false, Some(true)),
            (true, Some(false)),
        ]
    );
    let excl: Vec<bool> = f.iter().map(|x| x.exclude_from_grouping).collect();
    assert_eq!(excl, vec![false, false, false, false, true]);
    // empty patterns disable the processors
    let none = FramePatterns::new("", "").expect("patterns");
    let mut g = vec![mk(true, "foo.go", "")];
    none.mark_library(&mut g);
    assert!(g[0].library_frame && g[0].original.is_none());
    assert!(FramePatterns::new("(", "").is_err());
}

#[test]
fn malformed_map_json_is_an_error_not_a_crash() {
    let e = ParsedMap::parse(b"{not json").unwrap_err();
    assert!(e.to_string().starts_with("sourcemap malformed: "), "{e}");
    let e = ParsedMap::parse(b"{\"version\":3,\"sources\":[],\"names\":[],\"mappings\":\"!!\"}")
        .unwrap_err();
    assert!(e.to_string().starts_with("sourcemap malformed: "), "{e}");
}

// ---- store against Elasticsearch (double) ----

fn store_config(hosts: &str, extra: &[&str]) -> Config {
    let mut ov: Vec<String> = vec![
        "apm-server.rum.enabled=true".into(),
        format!("apm-server.rum.source_mapping.elasticsearch.hosts=[\"{hosts}\"]"),
        "apm-server.rum.source_mapping.elasticsearch.timeout=2s".into(),
    ];
    ov.extend(extra.iter().map(|s| s.to_string()));
    config::from_overrides(ov).expect("config")
}

fn stored_doc(service: &str, version: &str, path: &str, json: &[u8]) -> Value {
    let (content, sha) = apm_rs::sourcemap::map::encode_stored(json).expect("encode");
    json!({
        "service": {"name": service, "version": version},
        "file": {"path": path},
        "content": content,
        "content_sha256": sha,
    })
}

fn put_map(es: &EsDouble, service: &str, version: &str, path: &str, json: &[u8]) {
    es.put_doc(
        ".apm-source-map",
        &format!("{service}-{version}-{path}"),
        stored_doc(service, version, path, json),
    );
}

#[test]
fn store_finds_maps_and_reports_missing_ones() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    put_map(&es, "app", "1.0", "http://example.com/bundle.js", &map);
    let store = Store::start(&store_config(&es.host(), &[]), None).expect("store");
    let found = store
        .fetch("app", "1.0", "http://example.com/bundle.js?v=3", soon())
        .expect("fetch")
        .expect("map");
    assert!(found.lookup(1, 7).is_some());
    // relative request path hits the alias; the second lookup is a cache hit
    assert!(store.fetch("app", "1.0", "/bundle.js", soon()).is_ok());
    assert_eq!(store.cached(), 1);
    let e = store
        .fetch("app", "2.0", "http://example.com/bundle.js", soon())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "unable to find sourcemap.url for service.name=app service.version=2.0 bundle.path=http://example.com/bundle.js"
    );
}

#[test]
fn store_malformed_content_is_cached_error() {
    let es = EsDouble::start();
    let zl = common::zlib(b"this is not a source map");
    es.put_doc(
        ".apm-source-map",
        "app-1-/bad.js",
        json!({
            "service": {"name": "app", "version": "1"},
            "file": {"path": "/bad.js"},
            "content": base64::engine::general_purpose::STANDARD.encode(&zl),
            "content_sha256": "x",
        }),
    );
    let store = Store::start(&store_config(&es.host(), &[]), None).expect("store");
    let mut frames = vec![frame("http://h/bad.js", 1, 1, "f")];
    apply_sourcemaps(&mut frames, "app", "1", &store, soon());
    assert!(
        frames[0]
            .sourcemap_error
            .starts_with("sourcemap malformed: "),
        "{}",
        frames[0].sourcemap_error
    );
    assert!(!frames[0].sourcemap_updated);
    // permanent: cached, not fetched again
    let e = store.fetch("app", "1", "/bad.js", soon()).unwrap_err();
    assert!(e.to_string().starts_with("sourcemap malformed: "));
    assert_eq!(store.cached(), 1);
}

#[test]
fn q145_map_over_max_size() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    put_map(&es, "app", "1", "/bundle.js", &map);
    let cfg = store_config(
        &es.host(),
        &["apm-server.rum.source_mapping.max_sourcemap_size=5"],
    );
    let store = Store::start(&cfg, None).expect("store");
    let mut frames = vec![frame("/bundle.js", 1, 7, "f")];
    apply_sourcemaps(&mut frames, "app", "1", &store, soon());
    assert_eq!(
        frames[0].sourcemap_error,
        "sourcemap size exceeds limit : decompressed source map exceeds limit of 5 bytes"
    );
}

#[test]
fn q144_unreachable_es_errors_every_frame() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let store =
        Store::start(&store_config(&format!("127.0.0.1:{port}"), &[]), None).expect("store");
    for _ in 0..2 {
        for _span in 0..2 {
            let mut frames = vec![frame("/a.js", 1, 1, "f"), frame("/b.js", 2, 2, "g")];
            let before = frames.clone();
            apply_sourcemaps(&mut frames, "app", "1", &store, soon());
            for (f, b) in frames.iter().zip(&before) {
                assert!(
                    f.sourcemap_error.starts_with("failure querying ES: "),
                    "{}",
                    f.sourcemap_error
                );
                let mut f = f.clone();
                f.sourcemap_error.clear();
                assert_eq!(&f, b);
            }
        }
    }
}

#[test]
fn q146_silent_es_bounded_wait() {
    // accepts connections (kernel backlog) but never answers
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = l.local_addr().expect("addr").to_string();
    let store = Store::start(&store_config(&host, &[]), None).expect("store");
    let t0 = Instant::now();
    let mut frames = vec![frame("/a.js", 1, 1, "f"), frame("/b.js", 1, 1, "f")];
    apply_sourcemaps(
        &mut frames,
        "app",
        "1",
        &store,
        Instant::now() + Duration::from_millis(100),
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(
        frames[0]
            .sourcemap_error
            .starts_with("error waiting for metadata fetcher to be ready"),
        "{}",
        frames[0].sourcemap_error
    );
    drop(l);
}

// ---- upload API and RUM intake through HTTP ----

const BOUNDARY: &str = "----apmrsboundary7MA4YWxk";

fn multipart(fields: &[(&str, &str)], map: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some(m) = map {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"sourcemap\"; filename=\"bundle.js.map\"\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(m);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    b
}

fn ct() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

fn rum_server(es: &EsDouble, extra: &[&str]) -> TestServer {
    let mut ov = vec![
        "apm-server.rum.enabled=true".to_string(),
        format!(
            "apm-server.rum.source_mapping.elasticsearch.hosts=[\"{}\"]",
            es.host()
        ),
    ];
    ov.extend(extra.iter().map(|s| s.to_string()));
    let ov: Vec<&str> = ov.iter().map(String::as_str).collect();
    TestServer::start(&ov)
}

async fn upload(srv: &TestServer, bundle: &str, map: &[u8], auth: Option<&str>) -> common::Reply {
    let body = multipart(
        &[
            ("service_name", "apm-agent-js"),
            ("service_version", "1.0.1"),
            ("bundle_filepath", bundle),
        ],
        Some(map),
    );
    let ct = ct();
    let mut h = vec![("content-type", ct.as_str())];
    if let Some(a) = auth {
        h.push(("authorization", a));
    }
    post(&format!("{}/assets/v1/sourcemaps", srv.url), body, &h).await
}

fn approval_field(c: &std::path::Path, test: &str, field: &str) -> Option<String> {
    let v: Value =
        serde_json::from_slice(&std::fs::read(c.join("approvals").join(test)).ok()?).ok()?;
    let docs = v.as_array().cloned().unwrap_or_else(|| vec![v]);
    docs.iter()
        .find_map(|d| d.get(field)?.get(0)?.as_str().map(str::to_string))
}

async fn error_mapping_via_http(bundle: &str, approval: &str) {
    let Some(c) = corpus("sourcemap_upload_then_rum_error") else {
        return;
    };
    let map = std::fs::read(c.join("sourcemap/bundle.js.map")).expect("map");
    let es = EsDouble::start();
    let mut srv = rum_server(&es, &["apm-server.sourcemap.allow_anonymous_upload=true"]);
    let r = upload(&srv, bundle, &map, None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body.is_empty());
    assert_eq!(es.docs(".apm-source-map").len(), 1);
    let payload = std::fs::read(c.join("intake-v2/errors_rum.ndjson")).expect("payload");
    let r = post(
        &format!("{}/intake/v2/rum/events", srv.url),
        payload,
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let telemetry = std::sync::Arc::clone(&srv.server.as_ref().expect("running").telemetry);
    assert!(srv.shutdown().await);
    let cache: Vec<(String, f64)> = telemetry
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == "apm_rs_sourcemap_cache_total")
        .flat_map(|f| f.get_metric().iter())
        .map(|m| {
            (
                m.get_label()[0].value().to_string(),
                m.get_counter().get_value(),
            )
        })
        .collect();
    assert!(cache.contains(&("miss".to_string(), 1.0)), "{cache:?}");
    assert!(
        cache.iter().any(|(r, v)| r == "hit" && *v >= 5.0),
        "{cache:?}"
    );
    let docs = srv.docs();
    let err = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| d.pointer("/error/id").is_some())
        .expect("error document");
    let want_culprit = approval_field(&c, approval, "error.culprit").expect("approved culprit");
    let want_key = approval_field(&c, approval, "error.grouping_key").expect("approved key");
    assert_eq!(
        err.pointer("/error/culprit").and_then(Value::as_str),
        Some(want_culprit.as_str())
    );
    assert_eq!(
        err.pointer("/error/grouping_key").and_then(Value::as_str),
        Some(want_key.as_str())
    );
    assert_eq!(
        err.pointer("/error/exception/0/message")
            .and_then(Value::as_str),
        approval_field(&c, approval, "error.exception.message").as_deref()
    );
    let frames = err
        .pointer("/error/exception/0/stacktrace")
        .and_then(Value::as_array)
        .expect("frames");
    for f in frames {
        assert_eq!(f.pointer("/sourcemap/updated"), Some(&json!(true)), "{f}");
        assert!(f.pointer("/original/abs_path").is_some(), "{f}");
    }
    let log = err.pointer("/error/log/stacktrace/0").expect("log frame");
    assert_eq!(
        log.get("filename").and_then(Value::as_str),
        Some("webpack:///webpack/bootstrap 6002740481c9666b0d38")
    );
    assert_eq!(
        log.get("function").and_then(Value::as_str),
        Some("<anonymous>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_absolute_then_rum_error_matches_approval() {
    error_mapping_via_http(
        "http://localhost:8000/test/e2e/general-usecase/bundle.js.map",
        "TestRUMErrorSourcemapping/absolute_bundle_filepath/standalone.approved.json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_relative_then_rum_error_matches_approval() {
    error_mapping_via_http(
        "/test/e2e/general-usecase/bundle.js.map",
        "TestRUMErrorSourcemapping/relative_bundle_filepath/standalone.approved.json",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rum_spans_without_map_get_sourcemap_error() {
    let Some(c) = corpus("rum_spans_without_map") else {
        return;
    };
    let es = EsDouble::start();
    let mut srv = rum_server(&es, &[]);
    let payload =
        std::fs::read(c.join("intake-v2/transactions_spans_rum_2.ndjson")).expect("payload");
    let r = post(
        &format!("{}/intake/v2/rum/events", srv.url),
        payload,
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(srv.shutdown().await);
    let docs = srv.docs();
    let mut seen = 0;
    for (_, d) in &docs {
        if let Some(frames) = d.pointer("/span/stacktrace").and_then(Value::as_array) {
            for f in frames {
                if f.get("abs_path").is_some() && f.pointer("/line/column").is_some() {
                    let e = f
                        .pointer("/sourcemap/error")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    assert!(
                        e.starts_with("unable to find sourcemap.url for service.name=apm-agent-js"),
                        "{f}"
                    );
                    seen += 1;
                }
            }
        }
    }
    assert!(seen > 0, "no span frames checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_validation_and_auth() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    let srv = rum_server(&es, &["apm-server.auth.secret_token=s3cret"]);
    let url = format!("{}/assets/v1/sourcemaps", srv.url);
    // anonymous (implicitly enabled with RUM): never allowed
    let r = upload(&srv, "/b.js", &map, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "unauthorized: anonymous access not permitted for sourcemap uploads"
    );
    // wrong token
    let r = upload(&srv, "/b.js", &map, Some("Bearer nope")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let auth = "Bearer s3cret";
    // wrong content type
    let r = post(
        &url,
        b"{}".to_vec(),
        &[
            ("authorization", auth),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "data decoding error: invalid content type: application/json"
    );
    // missing fields
    let ct = ct();
    let r = post(
        &url,
        multipart(&[("service_name", "a")], Some(&map)),
        &[("authorization", auth), ("content-type", &ct)],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        "data validation error: error validating sourcemap: bundle_filepath, service_name and service_version must be sent"
    );
    // not a source map
    let r = upload(&srv, "/b.js", b"{\"hello\":1}", Some(auth)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap_or("")
        .starts_with("data validation error: error validating sourcemap: sourcemap malformed"));
    // method
    let r = common::send(
        reqwest::Method::GET,
        &url,
        vec![],
        &[("authorization", auth)],
    )
    .await;
    assert_eq!(r.status, 405);
    assert!(es.docs(".apm-source-map").is_empty());
    // success, stored in Kibana's format
    let r = upload(&srv, "http://localhost:8000/a/../b.js", &map, Some(auth)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let docs = es.docs_with_ids(".apm-source-map");
    assert_eq!(docs.len(), 1);
    let (id, d) = &docs[0];
    assert_eq!(id, "apm-agent-js-1.0.1-http://localhost:8000/b.js");
    assert_eq!(
        d.pointer("/file/path"),
        Some(&json!("http://localhost:8000/b.js"))
    );
    let content = d["content"].as_str().expect("content");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(content)
        .expect("b64");
    let sha = d["content_sha256"].as_str().expect("sha");
    use sha2::Digest;
    assert_eq!(sha, hex::encode(sha2::Sha256::digest(&raw)));
    let json = apm_rs::sourcemap::map::inflate_bounded(&raw, 1 << 20).expect("inflate");
    assert_eq!(json, map);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_too_large_and_disabled() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    let srv = rum_server(
        &es,
        &[
            "apm-server.rum.source_mapping.max_sourcemap_size=1000",
            "apm-server.sourcemap.allow_anonymous_upload=true",
        ],
    );
    let r = upload(&srv, "/b.js", &map, None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("exceeds limit"),
        "{}",
        r.body
    );
    let srv2 = rum_server(&es, &["apm-server.rum.source_mapping.enabled=false"]);
    let r = upload(&srv2, "/b.js", &map, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_api_keys_needs_sourcemap_write() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    es.set_api_key(
        "writer",
        "k",
        es_double::ApiKeyAnswer::granted("u1", &["sourcemap:write"]),
    );
    es.set_api_key(
        "ingest",
        "k",
        es_double::ApiKeyAnswer::granted("u2", &["event:write"]),
    );
    let srv = rum_server(
        &es,
        &[
            "apm-server.auth.api_key.enabled=true",
            &format!(
                "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
                es.url()
            ),
        ],
    );
    let key = |id: &str| {
        format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:k"))
        )
    };
    let r = upload(&srv, "/b.js", &map, Some(&key("ingest"))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        "unauthorized: API Key not permitted action \"sourcemap:write\""
    );
    assert!(es.docs(".apm-source-map").is_empty());
    let r = upload(&srv, "/b.js", &map, Some(&key("writer"))).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(es.docs(".apm-source-map").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_without_any_auth_configured_is_refused_unless_opted_in() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    let srv = rum_server(&es, &[]);
    let r = upload(&srv, "/b.js", &map, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.json()["error"],
        apm_rs::http::sourcemap_upload::MSG_NO_AUTH
    );
    assert!(es.docs(".apm-source-map").is_empty());
    let open = rum_server(&es, &["apm-server.sourcemap.allow_anonymous_upload=true"]);
    let r = upload(&open, "/b.js", &map, None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(es.docs(".apm-source-map").len(), 1);
}

/// Starts an upload on a raw connection that sends its head and the first
/// `sent` bytes of a larger map, then stalls; the socket keeps it open.
async fn stalled_upload(srv: &TestServer, sent: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut body = multipart(
        &[
            ("service_name", "s"),
            ("service_version", "1"),
            ("bundle_filepath", "/b.js"),
        ],
        None,
    );
    // drop the closing boundary: the map part follows and never ends
    body.truncate(body.len() - format!("--{BOUNDARY}--\r\n").len());
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"sourcemap\"\r\n\r\n")
            .as_bytes(),
    );
    body.resize(body.len() + sent, b' ');
    let addr = srv.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /assets/v1/sourcemaps HTTP/1.1\r\nHost: apm\r\nContent-Type: {}\r\nAuthorization: Bearer s3cret\r\nContent-Length: {}\r\n\r\n",
        ct(),
        body.len() + (10 << 20)
    );
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&body).await.expect("body");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_concurrency_limit_get_503() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    let srv = rum_server(
        &es,
        &[
            "apm-server.auth.secret_token=s3cret",
            "apm-server.sourcemap.max_concurrent_uploads=1",
        ],
    );
    let stalled = stalled_upload(&srv, 1000).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = upload(&srv, "/b.js", &map, Some("Bearer s3cret")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "service unavailable");
    drop(stalled);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = upload(&srv, "/b.js", &map, Some("Bearer s3cret")).await;
    assert_eq!(r.status, 202, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_holds_its_bytes_in_the_memory_budget() {
    let Some(map) = bundle_map() else { return };
    let es = EsDouble::start();
    let srv = rum_server(
        &es,
        &[
            "apm-server.auth.secret_token=s3cret",
            "pipeline.memory_budget=1MiB",
            "pipeline.queue_wait=200ms",
        ],
    );
    // 2 MB of a map arrive and wait: they fill the 1 MiB budget
    let stalled = stalled_upload(&srv, 2 << 20).await;
    let budget = std::sync::Arc::clone(&srv.server.as_ref().expect("running").pipeline.budget);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while budget.in_use() < budget.limit() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(budget.in_use(), budget.limit());
    // so another upload finds no room: 503, nothing stored
    let r = upload(&srv, "/b.js", &map, Some("Bearer s3cret")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(es.docs(".apm-source-map").is_empty());
    // the budget comes back when the stalled upload goes away
    drop(stalled);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while budget.in_use() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(budget.in_use(), 0);
    let r = upload(&srv, "/b.js", &map, Some("Bearer s3cret")).await;
    assert_eq!(r.status, 202, "{}", r.body);
}
