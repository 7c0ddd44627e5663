//! The conformance recipe runner, shared by `tests/conformance.rs` (against
//! the Elasticsearch double, with `emulate.rs` standing in for what
//! Elasticsearch does to a document) and `tests/real_engine.rs` (against
//! the real engine of issue 12, which does those steps itself: index
//! templates, ingest pipelines, mappers and `fields` retrieval).
//!
//! Each recipe posts corpus payloads through the real apm-rs server and its
//! Elasticsearch output; the stored documents, in `fields` form, are
//! compared with apm-server's approved documents (`compare.rs`).

#![allow(dead_code)] // each test binary uses one backend

use crate::common::{gzip, send, zlib, TestServer};
use crate::emulate::{self, Fields};
use crate::engine::Engine;
use crate::{compare, otlp_recipes, recipes, responses};
use es_double::EsDouble;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where the documents go, and who plays Elasticsearch's part.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    /// The `es-double` crate; ES-side steps emulated by `emulate.rs`.
    Double,
    /// A real engine; ES-side steps done by it.
    Engine(&'a Engine),
}

impl Backend<'_> {
    fn name(&self) -> &'static str {
        match self {
            Backend::Double => "double",
            Backend::Engine(_) => "engine",
        }
    }
}

/// Result of one approval.
pub enum Outcome {
    Pass,
    Fail(Vec<String>),
}

/// Every approval name under `dir` (relative path without `.approved.json`).
pub fn approval_names(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if p.is_dir() {
            approval_names(&p, &format!("{prefix}{name}/"), out);
        } else if let Some(stem) = name.strip_suffix(".approved.json") {
            out.push(format!("{prefix}{stem}"));
        }
    }
}

/// An approval file as `fields` documents.
fn load_approval(corpus: &Path, name: &str) -> Result<Vec<Fields>, String> {
    let path = corpus
        .join("approvals")
        .join(format!("{name}.approved.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
    let Value::Array(docs) = v else {
        return Err(format!("{name}: not a JSON array"));
    };
    docs.into_iter()
        .map(|d| match d {
            Value::Object(o) => Ok(o
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Array(a) => (k, a),
                    other => (k, vec![other]),
                })
                .collect()),
            other => Err(format!("{name}: document is not an object: {other}")),
        })
        .collect()
}

/// Stores a recipe's source map in `.apm-source-map` at `base_url`.
async fn store_sourcemap(base_url: &str, sm: &recipes::SourceMap) -> Result<(), String> {
    let (id, doc) = sm.document()?;
    let body = format!(
        "{}\n{}\n",
        serde_json::json!({"create": {"_index": ".apm-source-map", "_id": id}}),
        doc
    );
    let r = send(
        reqwest::Method::POST,
        &format!("{base_url}/_bulk?refresh=true"),
        body.into_bytes(),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    match r.status {
        200 if !r.body.contains("\"errors\":true") => Ok(()),
        s => Err(format!("storing the source map: {s} {}", r.body)),
    }
}

/// Posts the recipe's payloads through apm-rs into `host`, then shuts the
/// server down (which drains the pipeline and flushes the output).
async fn post_recipe(host: &str, r: &recipes::Recipe, problems: &mut Vec<String>) {
    let mut overrides = vec![
        format!("output.elasticsearch.hosts=[\"{host}\"]"),
        "output.elasticsearch.flush_interval=50ms".to_string(),
        // A real engine may be slow on a busy machine: never resend a bulk
        // because of a client-side timeout here.
        "output.elasticsearch.timeout=60s".to_string(),
    ];
    overrides.extend(r.config.iter().map(|s| s.to_string()));
    if r.sends.iter().any(|s| s.grpc.is_some()) {
        overrides.push("apm-server.otlp.grpc.host=127.0.0.1:0".to_string());
    }
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let mut srv = TestServer::start(&refs);
    for s in &r.sends {
        if let Some(signal) = s.grpc {
            let addr = srv.server.as_ref().and_then(|r| r.grpc_addr);
            let Some(addr) = addr else {
                problems.push("the gRPC listener did not start".into());
                continue;
            };
            if let Err(e) = otlp_recipes::export_grpc(addr, signal, &s.body, &s.headers).await {
                problems.push(format!("OTLP/gRPC {signal:?} export failed: {e}"));
            }
            continue;
        }
        let headers: Vec<(&str, &str)> = s.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = format!("{}{}", srv.url, s.path);
        let reply = send(reqwest::Method::POST, &url, s.body.clone(), &headers).await;
        if reply.status != s.status {
            problems.push(format!(
                "POST {} answered {} (expected {}): {}",
                s.path, reply.status, s.status, reply.body
            ));
        }
    }
    if !srv.shutdown().await {
        problems.push("server did not shut down cleanly".into());
    }
}

/// Our documents in `fields` form, per data stream, from the double (via
/// the emulation of ES) or from the engine (ES-side steps done by it).
async fn run_documents(
    backend: Backend<'_>,
    r: &recipes::Recipe,
    problems: &mut Vec<String>,
) -> Vec<(String, Fields)> {
    let mut ours = Vec::new();
    match backend {
        Backend::Double => {
            let es = EsDouble::start();
            if let Some(sm) = &r.sourcemap {
                if let Err(e) = store_sourcemap(&es.url(), sm).await {
                    problems.push(e);
                }
            }
            post_recipe(&es.host(), r, problems).await;
            let mut indices = es.indices();
            indices.sort();
            for index in indices.iter().filter(|i| !i.starts_with('.')) {
                for doc in es.docs(index) {
                    match emulate::fields_view(index, &doc) {
                        Ok(f) => ours.push((index.clone(), f)),
                        Err(e) => problems
                            .push(format!("cannot emulate ES for a document in {index}: {e}")),
                    }
                }
            }
        }
        Backend::Engine(engine) => {
            engine.reset().await;
            if let Some(sm) = &r.sourcemap {
                if let Err(e) = store_sourcemap(&engine.url, sm).await {
                    problems.push(e);
                }
            }
            post_recipe(&engine.host(), r, problems).await;
            for (ds, fields, _) in engine.documents().await {
                ours.push((ds, fields));
            }
        }
    }
    ours
}

async fn run_recipe(
    corpus: &Path,
    r: &recipes::Recipe,
    backend: Backend<'_>,
) -> Vec<(String, Outcome)> {
    let mut problems = Vec::new();
    let ours = run_documents(backend, r, &mut problems).await;
    r.checks
        .iter()
        .map(|c| {
            let mut lines = problems.clone();
            let selected: Vec<Fields> = ours
                .iter()
                .filter(|(idx, f)| (c.query)(idx, f))
                .map(|(_, f)| {
                    let mut f = f.clone();
                    compare::exclude(&mut f);
                    compare::apply_dynamic(&mut f, &c.dynamic);
                    f
                })
                .collect();
            match load_approval(corpus, &c.approval) {
                Err(e) => lines.push(e),
                Ok(approved) => {
                    let approved = approved
                        .into_iter()
                        .map(|mut f| {
                            compare::exclude(&mut f);
                            compare::apply_dynamic(&mut f, &c.dynamic);
                            f
                        })
                        .collect();
                    write_received(&c.approval, backend, &selected);
                    lines.extend(compare::compare(selected, approved));
                }
            }
            if !lines.is_empty() {
                if let Some(n) = r.note {
                    lines.insert(0, format!("note: {n}"));
                }
            }
            let out = if lines.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(lines)
            };
            (c.approval.clone(), out)
        })
        .collect()
}

/// With `CONFORMANCE_RECEIVED=<dir>`, writes our documents (fields view,
/// sorted, dynamic fields replaced) to `<dir>/<approval>.received.json`
/// (double) or `<dir>/<approval>.engine.received.json` (engine), like
/// upstream's `*.received.json`, for diffing by hand.
fn write_received(approval: &str, backend: Backend<'_>, docs: &[Fields]) {
    let Some(dir) = std::env::var_os("CONFORMANCE_RECEIVED") else {
        return;
    };
    let mut docs = docs.to_vec();
    docs.sort_by(compare::cmp_docs);
    let suffix = match backend {
        Backend::Double => "received.json",
        Backend::Engine(_) => "engine.received.json",
    };
    let path = Path::new(&dir).join(format!("{approval}.{suffix}"));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| {
            let text = serde_json::to_string_pretty(&docs).unwrap_or_default();
            std::fs::write(&path, text)
        });
    if let Err(e) = written {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

async fn run_response(corpus: &Path, c: &responses::Case) -> Outcome {
    let name = format!("intake-responses/{}.approved.json", c.name);
    let want: Value = match std::fs::read_to_string(corpus.join(&name))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return Outcome::Fail(vec![format!("{name}: {e}")]),
    };
    let file = |f: &str| std::fs::read(corpus.join(f)).unwrap_or_default();
    let body = match c.body {
        responses::Body::Empty => Vec::new(),
        responses::Body::File(f) => file(f),
        responses::Body::Gzip(f) => gzip(&file(f)),
        responses::Body::Zlib(f) => zlib(&file(f)),
    };
    let mut srv = TestServer::start(&c.config);
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let reply = send(method, &format!("{}{}", srv.url, c.path), body, &c.headers).await;
    srv.shutdown().await;
    let mut lines = Vec::new();
    if reply.status != c.status {
        lines.push(format!(
            "status: expected {} got {}",
            c.status, reply.status
        ));
    }
    match serde_json::from_str::<Value>(&reply.body) {
        Ok(got) => lines.extend(responses::compare_body(&got, &want)),
        Err(e) => lines.push(format!("body is not JSON ({e}): {:?}", reply.body)),
    }
    if lines.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(lines)
    }
}

/// Outcomes by approval name, and the approvals skipped with a reason.
#[derive(Default)]
pub struct Results {
    pub outcomes: BTreeMap<String, Outcome>,
    pub skips: Vec<(String, &'static str)>,
}

/// Runs every document recipe against `backend`.
pub async fn run_document_approvals(corpus: &Path, backend: Backend<'_>, out: &mut Results) {
    let recipes = recipes::recipes(corpus).expect("corpus payloads readable");
    let mut names = Vec::new();
    approval_names(&corpus.join("approvals"), "", &mut names);
    let claimed: BTreeSet<String> = recipes
        .iter()
        .flat_map(|r| r.checks.iter().map(|c| c.approval.clone()))
        .collect();
    // `CONFORMANCE_ONLY=<prefix>` runs only the recipes with an approval
    // starting with the prefix (while working on them).
    let only = std::env::var("CONFORMANCE_ONLY").unwrap_or_default();
    for r in recipes
        .iter()
        .filter(|r| r.checks.iter().any(|c| c.approval.starts_with(&only)))
    {
        for (name, o) in run_recipe(corpus, r, backend).await {
            out.outcomes.insert(name, o);
        }
    }
    for n in &names {
        if claimed.contains(n) {
            continue;
        }
        match recipes::skipped(n) {
            Some(reason) => out.skips.push((n.clone(), reason)),
            None => {
                out.outcomes.insert(
                    n.clone(),
                    Outcome::Fail(vec!["no recipe reproduces this approval".into()]),
                );
            }
        }
    }
    eprintln!(
        "conformance: document approvals run against the {}",
        backend.name()
    );
}

/// Runs every intake-response case (these never involve Elasticsearch).
pub async fn run_response_approvals(corpus: &Path, out: &mut Results) {
    let cases = responses::cases();
    let mut rnames = Vec::new();
    approval_names(&corpus.join("intake-responses"), "", &mut rnames);
    for c in &cases {
        let o = run_response(corpus, c).await;
        out.outcomes
            .insert(format!("intake-responses/{}", c.name), o);
    }
    for n in &rnames {
        if cases.iter().any(|c| c.name == n) {
            continue;
        }
        let key = format!("intake-responses/{n}");
        match responses::skipped(n) {
            Some(reason) => out.skips.push((key, reason)),
            None => {
                out.outcomes.insert(
                    key,
                    Outcome::Fail(vec!["no case reproduces this response".into()]),
                );
            }
        }
    }
}

/// Names listed in a list file (one per line, `#` comments).
pub fn listed(text: &str) -> BTreeSet<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Prints `PASS`/`FAIL`/`SKIP` lines and `N passed, M failed`, then fails
/// on any failure not in `expected` (named `list` in messages), on any
/// listed approval that passes, and on listed names that were not run.
pub fn report(results: &Results, expected: &BTreeSet<&str>, list: &str) {
    let (mut passed, mut failed) = (0, 0);
    let mut regressions = Vec::new();
    let mut fixed = Vec::new();
    for (name, o) in &results.outcomes {
        match o {
            Outcome::Pass => {
                passed += 1;
                println!("PASS {name}");
                if expected.contains(name.as_str()) {
                    fixed.push(name.clone());
                }
            }
            Outcome::Fail(lines) => {
                failed += 1;
                println!("FAIL {name}");
                if expected.contains(name.as_str()) {
                    println!("    (listed in {list})");
                }
                for l in lines {
                    println!("    {l}");
                }
                if !expected.contains(name.as_str()) {
                    regressions.push(name.clone());
                }
            }
        }
    }
    for (name, reason) in &results.skips {
        println!("SKIP {name}: {reason}");
    }
    let stale: Vec<&&str> = expected
        .iter()
        .filter(|k| !results.outcomes.contains_key(**k))
        .collect();
    println!("{passed} passed, {failed} failed");
    let mut msgs = Vec::new();
    if !regressions.is_empty() {
        msgs.push(format!(
            "approvals failing that are not in {list}: {regressions:?}"
        ));
    }
    if !fixed.is_empty() {
        msgs.push(format!(
            "approvals now passing; remove them from {list}: {fixed:?}"
        ));
    }
    if !stale.is_empty() {
        msgs.push(format!(
            "{list} names approvals the suite does not run; remove: {stale:?}"
        ));
    }
    assert!(msgs.is_empty(), "{}", msgs.join("\n"));
}
