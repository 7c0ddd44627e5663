//! HTTP routes of the double, in Elasticsearch's request and response
//! shapes: cluster info, `_bulk`, `_has_privileges`, `_search` with scroll,
//! single-document writes and reads, plus the `/_double/*` control routes.
//!
//! Invariants: every Elasticsearch response carries `X-Elastic-Product:
//! Elasticsearch`; errors use ES's `{"error":{"root_cause":[…],"type","reason"},"status"}`
//! body; a bulk either indexes its valid items or (whole-request fault)
//! indexes nothing.

use crate::query;
use crate::state::{ApiKeyAnswer, BulkRecord, Faults, Scroll, State, Stored};
use crate::Ctl;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

type Q = web::Query<HashMap<String, String>>;

pub(crate) struct Ctx {
    pub state: std::sync::Arc<State>,
    pub ctl: UnboundedSender<Ctl>,
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(info))
        .route("/", web::head().to(info))
        .route("/_bulk", web::post().to(bulk))
        .route("/_bulk", web::put().to(bulk))
        .route(
            "/_security/user/_has_privileges",
            web::get().to(has_privileges),
        )
        .route(
            "/_security/user/_has_privileges",
            web::post().to(has_privileges),
        )
        .route("/_search/scroll", web::get().to(scroll))
        .route("/_search/scroll", web::post().to(scroll))
        .route("/_search/scroll", web::delete().to(clear_scroll))
        .route("/_search/scroll/{id}", web::delete().to(clear_scroll))
        .route("/_double/faults", web::post().to(set_faults))
        .route("/_double/faults", web::put().to(set_faults))
        .route("/_double/faults", web::get().to(get_faults))
        .route("/_double/down", web::post().to(down))
        .route("/_double/reset", web::post().to(reset))
        .route("/_double/stats", web::get().to(stats))
        .route("/{index}/_bulk", web::post().to(bulk))
        .route("/{index}/_search", web::get().to(search))
        .route("/{index}/_search", web::post().to(search))
        .route("/{index}/_doc", web::post().to(doc_auto_id))
        .route("/{index}/_doc/{id}", web::put().to(doc_put))
        .route("/{index}/_doc/{id}", web::post().to(doc_put))
        .route("/{index}/_doc/{id}", web::get().to(doc_get))
        .route("/{index}/_create/{id}", web::put().to(doc_create))
        .route("/{index}/_create/{id}", web::post().to(doc_create));
}

fn es_error(status: u16, kind: &str, reason: &str) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(code).json(json!({
        "error": {
            "root_cause": [{"type": kind, "reason": reason}],
            "type": kind,
            "reason": reason,
        },
        "status": status,
    }))
}

fn error_type_for(status: u16) -> &'static str {
    match status {
        429 => "es_rejected_execution_exception",
        401 => "security_exception",
        403 => "security_exception",
        503 => "unavailable_shards_exception",
        s if s >= 500 => "internal_server_error",
        _ => "illegal_argument_exception",
    }
}

async fn latency(st: &State) {
    let ms = st.inner.lock().faults.latency_ms;
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn decode_body(req: &HttpRequest, body: &Bytes) -> Result<Vec<u8>, String> {
    let gz = req
        .headers()
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gz {
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity(body.len() * 4);
    flate2::read::MultiGzDecoder::new(&body[..])
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip body: {e}"))?;
    Ok(out)
}

async fn info(ctx: web::Data<Ctx>) -> HttpResponse {
    latency(&ctx.state).await;
    HttpResponse::Ok().json(json!({
        "name": "es-double",
        "cluster_name": "es-double",
        "cluster_uuid": "ZXMtZG91YmxlLWNsdXN0ZXI",
        "version": {
            "number": "9.1.0",
            "build_flavor": "default",
            "build_type": "docker",
            "build_hash": "0000000000000000000000000000000000000000",
            "build_date": "2025-07-01T00:00:00.000000000Z",
            "build_snapshot": false,
            "lucene_version": "10.2.2",
            "minimum_wire_compatibility_version": "8.19.0",
            "minimum_index_compatibility_version": "8.0.0"
        },
        "tagline": "You Know, for Search"
    }))
}

fn headers_of(req: &HttpRequest) -> BTreeMap<String, String> {
    req.headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "authorization")
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or("<binary>").to_string(),
            )
        })
        .collect()
}

fn record_bulk(ctx: &Ctx, req: &HttpRequest, items: usize, status: u16) {
    let h = req.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let rec = BulkRecord {
        query: req.query_string().to_string(),
        gzip: get("content-encoding").is_some_and(|v| v.eq_ignore_ascii_case("gzip")),
        content_type: get("content-type").unwrap_or_default(),
        authorization: get("authorization"),
        headers: headers_of(req),
        items,
        status,
    };
    let mut g = ctx.state.inner.lock();
    if g.bulk_log.len() >= 1000 {
        g.bulk_log.remove(0);
    }
    g.bulk_log.push(rec);
}

async fn bulk(
    req: HttpRequest,
    body: Bytes,
    q: Q,
    path: Option<web::Path<String>>,
    ctx: web::Data<Ctx>,
) -> HttpResponse {
    let st = &ctx.state;
    latency(st).await;
    st.bulk_requests.fetch_add(1, Ordering::Relaxed);
    let (status, drop_conn) = st.take_request_fault();
    if let Some(status) = status {
        record_bulk(&ctx, &req, 0, status);
        return es_error(
            status,
            error_type_for(status),
            "injected by es-double: whole bulk request failed",
        );
    }
    let raw = match decode_body(&req, &body) {
        Ok(r) => r,
        Err(e) => {
            record_bulk(&ctx, &req, 0, 400);
            return es_error(400, "parse_exception", &e);
        }
    };
    let default_index = path.map(|p| p.into_inner());
    let require_ds = q.get("require_data_stream").map(String::as_str) == Some("true");
    let resp = if st.fast {
        fast_bulk(st, &raw)
    } else {
        match full_bulk(st, &raw, default_index.as_deref(), require_ds) {
            Ok(v) => v,
            Err(e) => {
                record_bulk(&ctx, &req, 0, 400);
                return es_error(400, "illegal_argument_exception", &e);
            }
        }
    };
    let items = resp
        .get("items")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    record_bulk(&ctx, &req, items, 200);
    let resp = query::filter_response(resp, q.get("filter_path").map(String::as_str));
    let bytes = serde_json::to_vec(&resp).unwrap_or_default();
    let delay = st.inner.lock().faults.bulk_response_delay_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if drop_conn {
        // Half the answer, then an error: actix aborts the connection mid-body.
        let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
        let stream = futures_util::stream::iter(vec![
            Ok::<Bytes, std::io::Error>(half),
            Err(std::io::Error::other("es-double: connection dropped")),
        ]);
        return HttpResponse::Ok()
            .content_type("application/json")
            .streaming(stream);
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(bytes)
}

fn fast_bulk(st: &State, raw: &[u8]) -> Value {
    let lines = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    let n = lines / 2;
    st.fast_docs.fetch_add(n as u64, Ordering::Relaxed);
    let item = json!({"create": {"_index": "fast", "status": 201, "result": "created"}});
    json!({"took": 0, "errors": false, "items": vec![item; n]})
}

fn full_bulk(
    st: &State,
    raw: &[u8],
    default_index: Option<&str>,
    require_ds: bool,
) -> Result<Value, String> {
    let mut lines = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut items = Vec::new();
    let mut errors = false;
    let mut g = st.inner.lock();
    while let Some(action) = lines.next() {
        let action: Value = serde_json::from_slice(action)
            .map_err(|e| format!("Malformed action/metadata line: {e}"))?;
        let (op, meta) = action
            .as_object()
            .and_then(|o| o.iter().next())
            .ok_or("Malformed action/metadata line: expected an object")?;
        let op = op.clone();
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .or(default_index)
            .ok_or("index is missing")?
            .to_string();
        let id = meta.get("_id").and_then(Value::as_str).map(str::to_string);
        if op == "delete" {
            items.push(json!({op: {"_index": index, "status": 404, "result": "not_found"}}));
            continue;
        }
        let source = lines
            .next()
            .ok_or("The bulk request must be terminated by a newline [\\n]")?;
        let mut item = Map::new();
        item.insert("_index".into(), json!(index));
        let fault = st.item_fault(&mut g);
        let parsed: Result<Value, _> = serde_json::from_slice(source);
        let (status, error): (u16, Option<(&str, String)>) = if let Some(code) = fault {
            if code == 429 {
                (
                    429,
                    Some((
                        "es_rejected_execution_exception",
                        "rejected execution of coordinating operation (injected by es-double)"
                            .into(),
                    )),
                )
            } else {
                (
                    400,
                    Some((
                        "document_parsing_exception",
                        "[1:2] failed to parse (injected by es-double)".into(),
                    )),
                )
            }
        } else if require_ds && op != "create" {
            (400, Some(("illegal_argument_exception", format!("only write ops with an op_type of create are allowed in data streams, got [{op}]"))))
        } else {
            match parsed {
                Err(e) => (
                    400,
                    Some((
                        "document_parsing_exception",
                        format!("failed to parse: {e}"),
                    )),
                ),
                Ok(doc) => match State::store(&mut g, &index, id.as_deref(), doc, op == "create") {
                    Stored::Created(id) => {
                        item.insert("_id".into(), json!(id));
                        item.insert("result".into(), json!("created"));
                        (201, None)
                    }
                    Stored::Updated(id) => {
                        item.insert("_id".into(), json!(id));
                        item.insert("result".into(), json!("updated"));
                        (200, None)
                    }
                    Stored::Conflict(id) => {
                        let reason = format!("[{id}]: version conflict, document already exists (current version [1])");
                        item.insert("_id".into(), json!(id));
                        (409, Some(("version_conflict_engine_exception", reason)))
                    }
                },
            }
        };
        item.insert("status".into(), json!(status));
        if let Some((kind, reason)) = error {
            errors = true;
            item.insert(
                "error".into(),
                json!({"type": kind, "reason": reason, "index": index}),
            );
        } else {
            item.insert("_version".into(), json!(1));
            item.insert(
                "_shards".into(),
                json!({"total": 1, "successful": 1, "failed": 0}),
            );
        }
        items.push(json!({op: Value::Object(item)}));
    }
    Ok(json!({"took": 1, "errors": errors, "items": items}))
}

fn api_key_id(req: &HttpRequest) -> Option<(String, String)> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let cred = h.strip_prefix("ApiKey ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let s = String::from_utf8(decoded).ok()?;
    let (id, key) = s.split_once(':')?;
    Some((id.to_string(), key.to_string()))
}

async fn has_privileges(req: HttpRequest, body: Bytes, ctx: web::Data<Ctx>) -> HttpResponse {
    let st = &ctx.state;
    latency(st).await;
    st.has_privileges_calls.fetch_add(1, Ordering::Relaxed);
    st.inner.lock().last_has_privileges_body = Some(String::from_utf8_lossy(&body).into_owned());
    let answer = api_key_id(&req).and_then(|(id, key)| {
        let g = st.inner.lock();
        match g.api_keys.get(&id) {
            Some((k, a)) if *k == key => Some(a.clone()),
            _ => None,
        }
    });
    let Some(answer) = answer else {
        return es_error(
            401,
            "security_exception",
            "unable to authenticate with provided credentials and anonymous access is not allowed for this request",
        );
    };
    let (username, granted) = match answer {
        ApiKeyAnswer::Status { status } => {
            return es_error(status, error_type_for(status), "injected by es-double");
        }
        ApiKeyAnswer::Privileges {
            username,
            privileges,
        } => (username, privileges),
    };
    let asked: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut application = Map::new();
    let mut all = true;
    for app in asked
        .get("application")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = app
            .get("application")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let privs: Vec<&str> = app
            .get("privileges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let entry = application
            .entry(name.to_string())
            .or_insert_with(|| json!({}));
        for res in app
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let mut m = Map::new();
            for p in &privs {
                let ok = granted.get(*p).copied().unwrap_or(false);
                all &= ok;
                m.insert(p.to_string(), json!(ok));
            }
            if let Some(o) = entry.as_object_mut() {
                o.insert(res.to_string(), Value::Object(m));
            }
        }
    }
    HttpResponse::Ok().json(json!({
        "username": username,
        "has_all_requested": all,
        "cluster": {},
        "index": {},
        "application": application,
    }))
}

fn parse_size(v: Option<&Value>, q: Option<&String>, default: usize) -> usize {
    q.and_then(|s| s.parse().ok())
        .or_else(|| v.and_then(Value::as_u64).map(|n| n as usize))
        .unwrap_or(default)
}

fn hits_json(hits: &[Value], total: usize) -> Value {
    json!({
        "total": {"value": total, "relation": "eq"},
        "max_score": if hits.is_empty() { Value::Null } else { json!(1.0) },
        "hits": hits,
    })
}

async fn search(
    req: HttpRequest,
    path: web::Path<String>,
    q: Q,
    body: Bytes,
    ctx: web::Data<Ctx>,
) -> HttpResponse {
    let st = &ctx.state;
    latency(st).await;
    st.search_calls.fetch_add(1, Ordering::Relaxed);
    let index = path.into_inner();
    let body = match decode_body(&req, &body) {
        Ok(b) => b,
        Err(e) => return es_error(400, "parse_exception", &e),
    };
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return es_error(400, "parse_exception", &format!("{e}")),
        }
    };
    let size = parse_size(b.get("size"), q.get("size"), 10);
    let from = parse_size(b.get("from"), q.get("from"), 0);
    let source_spec: Option<Value> = q
        .get("_source")
        .map(|s| match s.as_str() {
            "true" => json!(true),
            "false" => json!(false),
            other => json!(other),
        })
        .or_else(|| b.get("_source").cloned());
    let query = b.get("query").cloned().unwrap_or(json!({"match_all": {}}));
    let mut g = st.inner.lock();
    let Some(idx) = g.indices.get(&index) else {
        return es_error(
            404,
            "index_not_found_exception",
            &format!("no such index [{index}]"),
        );
    };
    let hits: Vec<Value> = idx
        .docs
        .iter()
        .filter(|(id, d)| query::matches(&query, d, id))
        .map(|(id, d)| {
            let mut h = json!({"_index": index, "_id": id, "_score": 1.0});
            if let (Some(src), Some(o)) = (
                query::filter_source(d, source_spec.as_ref()),
                h.as_object_mut(),
            ) {
                o.insert("_source".into(), src);
            }
            h
        })
        .collect();
    let total = hits.len();
    let mut resp = json!({
        "took": 1,
        "timed_out": false,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
    });
    let page: Vec<Value> = hits.iter().skip(from).take(size).cloned().collect();
    if q.contains_key("scroll") || b.get("scroll").is_some() {
        g.next_scroll += 1;
        let sid = base64::engine::general_purpose::STANDARD
            .encode(format!("es-double-scroll-{}", g.next_scroll));
        let pos = (from + page.len()).min(total);
        g.scrolls.insert(
            sid.clone(),
            Scroll {
                hits,
                pos,
                size: size.max(1),
                total,
            },
        );
        resp["_scroll_id"] = json!(sid);
    }
    resp["hits"] = hits_json(&page, total);
    let resp = query::filter_response(resp, q.get("filter_path").map(String::as_str));
    HttpResponse::Ok().json(resp)
}

fn scroll_id_from(q: &Q, body: &Bytes, path: Option<String>) -> Option<String> {
    if let Some(p) = path {
        return Some(p);
    }
    if let Some(id) = q.get("scroll_id") {
        return Some(id.clone());
    }
    let b: Value = serde_json::from_slice(body).ok()?;
    match b.get("scroll_id")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

async fn scroll(q: Q, body: Bytes, ctx: web::Data<Ctx>) -> HttpResponse {
    let st = &ctx.state;
    latency(st).await;
    st.search_calls.fetch_add(1, Ordering::Relaxed);
    let Some(sid) = scroll_id_from(&q, &body, None) else {
        return es_error(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: scrollId is missing;",
        );
    };
    let mut g = st.inner.lock();
    let Some(s) = g.scrolls.get_mut(&sid) else {
        return es_error(
            404,
            "search_context_missing_exception",
            &format!("No search context found for id [{sid}]"),
        );
    };
    let end = (s.pos + s.size).min(s.hits.len());
    let page = s.hits[s.pos..end].to_vec();
    s.pos = end;
    let total = s.total;
    HttpResponse::Ok().json(json!({
        "_scroll_id": sid,
        "took": 1,
        "timed_out": false,
        "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
        "hits": hits_json(&page, total),
    }))
}

async fn clear_scroll(
    q: Q,
    body: Bytes,
    path: Option<web::Path<String>>,
    ctx: web::Data<Ctx>,
) -> HttpResponse {
    let sid = scroll_id_from(&q, &body, path.map(|p| p.into_inner()));
    let mut g = ctx.state.inner.lock();
    let freed = match sid.as_deref() {
        Some("_all") => {
            let n = g.scrolls.len();
            g.scrolls.clear();
            n
        }
        Some(ids) => ids
            .split(',')
            .filter(|id| g.scrolls.remove(id.trim()).is_some())
            .count(),
        None => 0,
    };
    let code = if freed == 0 {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    HttpResponse::build(code).json(json!({"succeeded": true, "num_freed": freed}))
}

fn write_response(index: &str, stored: Stored) -> HttpResponse {
    let (code, id, result) = match stored {
        Stored::Created(id) => (StatusCode::CREATED, id, "created"),
        Stored::Updated(id) => (StatusCode::OK, id, "updated"),
        Stored::Conflict(id) => {
            return es_error(
                409,
                "version_conflict_engine_exception",
                &format!("[{id}]: version conflict, document already exists (current version [1])"),
            )
        }
    };
    HttpResponse::build(code).json(json!({
        "_index": index,
        "_id": id,
        "_version": 1,
        "result": result,
        "_shards": {"total": 1, "successful": 1, "failed": 0},
        "_seq_no": 0,
        "_primary_term": 1,
    }))
}

async fn write_doc(
    req: HttpRequest,
    body: Bytes,
    ctx: web::Data<Ctx>,
    index: String,
    id: Option<String>,
    create_only: bool,
) -> HttpResponse {
    latency(&ctx.state).await;
    let raw = match decode_body(&req, &body) {
        Ok(b) => b,
        Err(e) => return es_error(400, "parse_exception", &e),
    };
    let doc: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => {
            return es_error(
                400,
                "document_parsing_exception",
                &format!("failed to parse: {e}"),
            )
        }
    };
    let stored = State::store(
        &mut ctx.state.inner.lock(),
        &index,
        id.as_deref(),
        doc,
        create_only,
    );
    write_response(&index, stored)
}

async fn doc_auto_id(
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
    ctx: web::Data<Ctx>,
) -> HttpResponse {
    write_doc(req, body, ctx, path.into_inner(), None, true).await
}

async fn doc_put(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    q: Q,
    body: Bytes,
    ctx: web::Data<Ctx>,
) -> HttpResponse {
    let (index, id) = path.into_inner();
    let create = q.get("op_type").map(String::as_str) == Some("create");
    write_doc(req, body, ctx, index, Some(id), create).await
}

async fn doc_create(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Bytes,
    ctx: web::Data<Ctx>,
) -> HttpResponse {
    let (index, id) = path.into_inner();
    write_doc(req, body, ctx, index, Some(id), true).await
}

async fn doc_get(path: web::Path<(String, String)>, ctx: web::Data<Ctx>) -> HttpResponse {
    latency(&ctx.state).await;
    let (index, id) = path.into_inner();
    let g = ctx.state.inner.lock();
    let found = g
        .indices
        .get(&index)
        .and_then(|i| i.by_id.get(&id).and_then(|&p| i.docs.get(p)));
    match found {
        Some((_, d)) => HttpResponse::Ok().json(json!({
            "_index": index, "_id": id, "_version": 1, "_seq_no": 0, "_primary_term": 1,
            "found": true, "_source": d,
        })),
        None => HttpResponse::NotFound().json(json!({"_index": index, "_id": id, "found": false})),
    }
}

async fn set_faults(body: web::Json<Faults>, ctx: web::Data<Ctx>) -> HttpResponse {
    let mut g = ctx.state.inner.lock();
    g.faults = body.into_inner();
    g.item_faults_used = 0;
    g.request_faults_used = 0;
    HttpResponse::Ok().json(&g.faults)
}

async fn get_faults(ctx: web::Data<Ctx>) -> HttpResponse {
    HttpResponse::Ok().json(ctx.state.faults())
}

async fn down(q: Q, ctx: web::Data<Ctx>) -> HttpResponse {
    let ms = q
        .get("ms")
        .and_then(|s| s.parse::<u64>().ok())
        .or_else(|| {
            q.get("seconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| s * 1000)
        })
        .unwrap_or(1000);
    let ctl = ctx.ctl.clone();
    // Answer first, then go down.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = ctl.send(Ctl::Down(Duration::from_millis(ms)));
    });
    HttpResponse::Ok().json(json!({"down_for_ms": ms}))
}

async fn reset(ctx: web::Data<Ctx>) -> HttpResponse {
    ctx.state.reset();
    HttpResponse::Ok().json(json!({"reset": true}))
}

async fn stats(ctx: web::Data<Ctx>) -> HttpResponse {
    let st = &ctx.state;
    let g = st.inner.lock();
    let per_index: BTreeMap<&String, usize> =
        g.indices.iter().map(|(k, v)| (k, v.docs.len())).collect();
    let docs: usize =
        per_index.values().sum::<usize>() + st.fast_docs.load(Ordering::Relaxed) as usize;
    HttpResponse::Ok().json(json!({
        "docs": docs,
        "indices": per_index,
        "bulk_requests": st.bulk_requests.load(Ordering::Relaxed),
        "has_privileges_calls": st.has_privileges_calls.load(Ordering::Relaxed),
        "search_calls": st.search_calls.load(Ordering::Relaxed),
        "faults": g.faults,
    }))
}
