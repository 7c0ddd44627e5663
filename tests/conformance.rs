//! Conformance suite (issue 9): posts the corpus payloads of documents.md
//! §18.4 through the real apm-rs server, turns the written `_source`
//! documents into Elasticsearch's `fields` view by emulating §17
//! (`conformance/emulate.rs`), and compares them with apm-server's approved
//! documents (`conformance/compare.rs`). The intake-response approvals are
//! compared with live responses (`conformance/responses.rs`).
//!
//! Documents go through the real Elasticsearch output into the
//! Elasticsearch double (`es-double`), which keeps their `_source` per data
//! stream. Output: one `PASS <name>` / `FAIL <name>`
//! line per approval (with a diff), `SKIP <name>: <reason>` for approvals
//! that are not produced from intake payloads, then `N passed, M failed`.
//!
//! Set `CONFORMANCE_RECEIVED=<dir>` to get our documents written as
//! `<dir>/<approval>.received.json`.
//!
//! `conformance/known_failures.txt` lists approvals expected to fail. The
//! test fails on any other failure (a regression) and on any listed
//! approval that now passes (remove it from the list).

mod common;

#[path = "conformance/compare.rs"]
mod compare;
#[path = "conformance/emulate.rs"]
mod emulate;
#[path = "conformance/recipes.rs"]
mod recipes;
#[path = "conformance/responses.rs"]
mod responses;

use common::{gzip, send, zlib, TestServer};
use emulate::Fields;
use es_double::EsDouble;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const KNOWN_FAILURES: &str = include_str!("conformance/known_failures.txt");

/// Result of one approval.
enum Outcome {
    Pass,
    Fail(Vec<String>),
}

/// Every approval name under `dir` (relative path without `.approved.json`).
fn approval_names(dir: &Path, prefix: &str, out: &mut Vec<String>) {
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

/// Stores a recipe's source map in the double's `.apm-source-map`.
async fn store_sourcemap(es: &EsDouble, sm: &recipes::SourceMap) -> Result<(), String> {
    let (id, doc) = sm.document()?;
    let body = format!(
        "{}\n{}\n",
        serde_json::json!({"create": {"_index": ".apm-source-map", "_id": id}}),
        doc
    );
    let r = send(
        reqwest::Method::POST,
        &format!("{}/_bulk?refresh=true", es.url()),
        body.into_bytes(),
        &[("content-type", "application/x-ndjson")],
    )
    .await;
    match r.status {
        200 if !r.body.contains("\"errors\":true") => Ok(()),
        s => Err(format!(
            "storing the source map in the double: {s} {}",
            r.body
        )),
    }
}

async fn run_recipe(corpus: &Path, r: &recipes::Recipe) -> Vec<(String, Outcome)> {
    let mut problems = Vec::new();
    // Documents go through the real Elasticsearch output into the double.
    let es = EsDouble::start();
    if let Some(sm) = &r.sourcemap {
        if let Err(e) = store_sourcemap(&es, sm).await {
            problems.push(e);
        }
    }
    let mut overrides = vec![
        format!("output.elasticsearch.hosts=[\"{}\"]", es.host()),
        "output.elasticsearch.flush_interval=50ms".to_string(),
    ];
    overrides.extend(r.config.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let mut srv = TestServer::start(&refs);
    for s in &r.sends {
        let headers: Vec<(&str, &str)> = s.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = format!("{}{}", srv.url, s.path);
        let reply = send(reqwest::Method::POST, &url, s.body.clone(), &headers).await;
        if reply.status != 202 {
            problems.push(format!(
                "POST {} answered {} (expected 202): {}",
                s.path, reply.status, reply.body
            ));
        }
    }
    // Graceful shutdown drains the pipeline and flushes the output.
    if !srv.shutdown().await {
        problems.push("server did not shut down cleanly".into());
    }
    let mut ours: Vec<(String, Fields)> = Vec::new();
    let mut indices = es.indices();
    indices.sort();
    for index in indices.iter().filter(|i| !i.starts_with('.')) {
        for doc in es.docs(index) {
            match emulate::fields_view(index, &doc) {
                Ok(f) => ours.push((index.clone(), f)),
                Err(e) => {
                    problems.push(format!("cannot emulate ES for a document in {index}: {e}"))
                }
            }
        }
    }
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
                    write_received(&c.approval, &selected);
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
/// sorted, dynamic fields replaced) to `<dir>/<approval>.received.json`,
/// like upstream's `*.received.json`, for diffing by hand.
fn write_received(approval: &str, docs: &[Fields]) {
    let Some(dir) = std::env::var_os("CONFORMANCE_RECEIVED") else {
        return;
    };
    let mut docs = docs.to_vec();
    docs.sort_by(compare::cmp_docs);
    let path = Path::new(&dir).join(format!("{approval}.received.json"));
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

#[tokio::test]
async fn conformance() {
    let Some(corpus) = common::corpus("conformance") else {
        eprintln!("SKIPPED: corpus not found (set APM_CORPUS); conformance suite not run");
        return;
    };
    let mut results: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut skips: Vec<(String, &str)> = Vec::new();

    // document approvals
    let recipes = recipes::recipes(&corpus).expect("corpus payloads readable");
    let mut names = Vec::new();
    approval_names(&corpus.join("approvals"), "", &mut names);
    let claimed: BTreeSet<String> = recipes
        .iter()
        .flat_map(|r| r.checks.iter().map(|c| c.approval.clone()))
        .collect();
    for r in &recipes {
        for (name, o) in run_recipe(&corpus, r).await {
            results.insert(name, o);
        }
    }
    for n in &names {
        if claimed.contains(n) {
            continue;
        }
        match recipes::skipped(n) {
            Some(reason) => skips.push((n.clone(), reason)),
            None => {
                results.insert(
                    n.clone(),
                    Outcome::Fail(vec!["no recipe reproduces this approval".into()]),
                );
            }
        }
    }

    // response approvals
    let cases = responses::cases();
    let mut rnames = Vec::new();
    approval_names(&corpus.join("intake-responses"), "", &mut rnames);
    for c in &cases {
        let o = run_response(&corpus, c).await;
        results.insert(format!("intake-responses/{}", c.name), o);
    }
    for n in &rnames {
        if cases.iter().any(|c| c.name == n) {
            continue;
        }
        let key = format!("intake-responses/{n}");
        match responses::skipped(n) {
            Some(reason) => skips.push((key, reason)),
            None => {
                results.insert(
                    key,
                    Outcome::Fail(vec!["no case reproduces this response".into()]),
                );
            }
        }
    }

    // report
    let known: BTreeSet<&str> = KNOWN_FAILURES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    let mut regressions = Vec::new();
    let mut fixed = Vec::new();
    for (name, o) in &results {
        match o {
            Outcome::Pass => {
                passed += 1;
                println!("PASS {name}");
                if known.contains(name.as_str()) {
                    fixed.push(name.clone());
                }
            }
            Outcome::Fail(lines) => {
                failed += 1;
                println!("FAIL {name}");
                if known.contains(name.as_str()) {
                    println!("    (listed in tests/conformance/known_failures.txt)");
                }
                for l in lines {
                    println!("    {l}");
                }
                if !known.contains(name.as_str()) {
                    regressions.push(name.clone());
                }
            }
        }
    }
    for (name, reason) in &skips {
        println!("SKIP {name}: {reason}");
    }
    let stale: Vec<&&str> = known
        .iter()
        .filter(|k| !results.contains_key(**k))
        .collect();
    println!("{passed} passed, {failed} failed");
    let mut msgs = Vec::new();
    if !regressions.is_empty() {
        msgs.push(format!(
            "approvals failing that are not in tests/conformance/known_failures.txt: {regressions:?}"
        ));
    }
    if !fixed.is_empty() {
        msgs.push(format!(
            "approvals now passing; remove them from tests/conformance/known_failures.txt: {fixed:?}"
        ));
    }
    if !stale.is_empty() {
        msgs.push(format!(
            "known_failures.txt names approvals the suite does not run; remove: {stale:?}"
        ));
    }
    assert!(msgs.is_empty(), "{}", msgs.join("\n"));
}
