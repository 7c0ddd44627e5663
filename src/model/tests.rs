//! Corpus-driven tests for the intake model (documents.md §5–§15): every
//! `intake-v2` payload decodes with the expected event/error counts, the
//! encoded `_source` matches the approvals after an emulation of the ES
//! `fields` view (§17–§18), exact error messages (cases.md C.23–C.28, §15.4),
//! grouping keys (§8.4) and a no-panic sweep over truncated/garbled lines.
//! The corpus is read from `$APM_CORPUS` or `../shared/corpus`; tests print a
//! `SKIPPED` line and return when it is absent.

use super::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

pub(crate) fn corpus_dir() -> Option<PathBuf> {
    let p = match std::env::var_os("APM_CORPUS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: corpus not found at {}", p.display());
        None
    }
}

const T_NS: i64 = 1_700_000_000_123_456_789;

fn base(rum: bool) -> RequestBase {
    RequestBase {
        received_ns: T_NS,
        rum,
        client_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))),
        source_port: Some(50000),
        nat_ip: None,
        user_agent: Some("test-agent/1.0".into()),
    }
}

fn ctx() -> EncodeContext {
    EncodeContext {
        observer_hostname: "host".into(),
        observer_version: "9.6.0".into(),
        namespace: "default".into(),
    }
}

struct Run {
    events: Vec<Event>,
    errors: Vec<LineError>,
    meta_err: Option<LineError>,
}

fn run_bytes(data: &[u8], rum: bool) -> Run {
    let mut d = Decoder::new(DecodeConfig::default());
    let mut lines = data.split(|&b| b == b'\n');
    let mut run = Run { events: Vec::new(), errors: Vec::new(), meta_err: None };
    let Some(first) = lines.next() else { return run };
    let meta = match d.decode_metadata(first, &base(rum)) {
        Ok(m) => m,
        Err(e) => {
            run.meta_err = Some(e);
            return run;
        }
    };
    for l in lines {
        if l.is_empty() {
            continue;
        }
        if let Err(e) = d.decode_event(l, &meta, &mut run.events) {
            run.errors.push(e);
        }
    }
    run
}

fn run_file(dir: &std::path::Path, name: &str, rum: bool) -> Run {
    let data = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    run_bytes(&data, rum)
}

/// Encodes events; returns (index line, document) pairs.
fn encode_all(events: &[Event]) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    for ev in events {
        let mut buf = Vec::new();
        if encode(ev, &ctx(), &mut buf) {
            let s = std::str::from_utf8(&buf).expect("utf8");
            let mut it = s.split('\n');
            let a: Value = serde_json::from_str(it.next().unwrap()).expect("action json");
            let d: Value = serde_json::from_str(it.next().unwrap()).unwrap_or_else(|e| panic!("doc json {e}: {s}"));
            assert_eq!(it.next(), Some(""));
            out.push((a, d));
        }
    }
    out
}

#[test]
fn corpus_files_decode() {
    let Some(dir) = corpus_dir() else { return };
    // (file, events, line errors, metadata error)
    let expect: &[(&str, usize, usize, bool)] = &[
        ("errors.ndjson", 5, 0, false),
        ("errors_2.ndjson", 4, 0, false),
        ("errors_transaction_id.ndjson", 1, 0, false),
        ("events.ndjson", 4, 0, false),
        ("invalid-event-type.ndjson", 0, 1, false),
        ("invalid-event.ndjson", 1, 1, false),
        ("invalid-json-event.ndjson", 1, 1, false),
        ("invalid-json-metadata.ndjson", 0, 0, true),
        ("invalid-metadata-2.ndjson", 0, 0, true),
        ("invalid-metadata.ndjson", 0, 0, true),
        ("logs.ndjson", 7, 0, false),
        ("metadata-null-values.ndjson", 1, 0, false),
        ("minimal.ndjson", 7, 0, false),
        ("minimal-service.ndjson", 2, 0, false),
        ("optional-timestamps.ndjson", 3, 0, false),
        ("span-links.ndjson", 2, 0, false),
        ("spans.ndjson", 10, 0, false),
        ("transactions.ndjson", 5, 0, false),
        ("transactions-huge_traces.ndjson", 1, 0, false),
        ("transactions_spans.ndjson", 9, 0, false),
        ("unknown-span-type.ndjson", 2, 0, false),
        ("otel-bridge.ndjson", 2, 0, false),
        ("ratelimit.ndjson", 19, 0, false),
    ];
    for &(f, n, e, me) in expect {
        let r = run_file(&dir.join("intake-v2"), f, false);
        assert_eq!(r.meta_err.is_some(), me, "{f}: metadata error {:?}", r.meta_err);
        assert_eq!(r.errors.len(), e, "{f}: line errors {:?}", r.errors);
        assert_eq!(r.events.len(), n, "{f}: events");
        encode_all(&r.events);
    }
    // every file decodes without panicking, RUM or not
    for entry in std::fs::read_dir(dir.join("intake-v2")).unwrap() {
        let p = entry.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        for rum in [false, true] {
            let r = run_bytes(&data, rum);
            encode_all(&r.events);
        }
    }
}

// ---------------------------------------------------------------------------
// ES `fields` emulation (documents.md §17, §18.2) and approval comparison

const NOT_INDEXED: &[&str] = &[
    "span.stacktrace",
    "error.exception.stacktrace",
    "error.log.stacktrace",
    "transaction.custom",
    "error.custom",
    "error.exception.attributes",
    "http.request.cookies",
    "http.request.body",
    "span.links",
];
const WHOLE_OBJECTS: &[&str] = &["http.request.headers", "http.response.headers"];

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Vec<Value>>) {
    if NOT_INDEXED.contains(&prefix) {
        return;
    }
    if WHOLE_OBJECTS.contains(&prefix) {
        let mut m = Map::new();
        if let Value::Object(o) = v {
            for (k, vals) in o {
                match vals {
                    Value::Array(a) if a.len() == 1 => m.insert(k.clone(), a[0].clone()),
                    other => m.insert(k.clone(), other.clone()),
                };
            }
        }
        out.entry(prefix.to_owned()).or_default().push(Value::Object(m));
        return;
    }
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, c, out);
            }
        }
        Value::Array(a) => {
            for e in a {
                flatten(prefix, e, out);
            }
        }
        Value::Null => {}
        other => out.entry(prefix.to_owned()).or_default().push(other.clone()),
    }
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, p| cur.get(p))
}

/// `_source` → `fields`, emulating the ES ingest pipelines and mappings.
fn fields_view(doc: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut doc = doc.clone();
    let ty = get_path(&doc, "data_stream.type").and_then(Value::as_str).unwrap_or("").to_owned();
    let ds = get_path(&doc, "data_stream.dataset").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut extra: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let root = doc.as_object_mut().unwrap();
    match ty.as_str() {
        "traces" => {
            let pe = if root.get("transaction").and_then(|t| t.get("type")).is_some() { "transaction" } else { "span" };
            extra.insert("processor.event".into(), vec![pe.into()]);
            let ev = root.get_mut("event").and_then(Value::as_object_mut);
            let dur = ev.as_ref().and_then(|e| e.get("duration")).and_then(Value::as_i64).unwrap_or(0);
            let outcome = ev.as_ref().and_then(|e| e.get("outcome")).and_then(Value::as_str).unwrap_or("").to_owned();
            if let Some(e) = ev {
                e.remove("duration");
            }
            extra.insert(format!("{pe}.duration.us"), vec![(dur / 1000).into()]);
            let rc = root.get(pe).and_then(|t| t.get("representative_count")).and_then(Value::as_f64);
            match outcome.as_str() {
                "success" => {
                    extra.insert("event.success_count".into(), vec![rc.unwrap_or(1.0).into()]);
                }
                "failure" => {
                    extra.insert("event.success_count".into(), vec![0.into()]);
                }
                _ => {}
            }
        }
        "logs" => {
            if ds == "apm.error" {
                extra.insert("processor.event".into(), vec!["error".into()]);
                let lm = root.get("error").and_then(|e| e.get("log")).and_then(|l| l.get("message")).and_then(Value::as_str);
                let xm = root
                    .get("error")
                    .and_then(|e| e.get("exception"))
                    .and_then(|x| x.get(0))
                    .and_then(|x| x.get("message"))
                    .and_then(Value::as_str);
                if let Some(n) = lm.filter(|s| !s.is_empty()).or(xm.filter(|s| !s.is_empty())) {
                    extra.insert("error.grouping_name".into(), vec![n.into()]);
                }
            }
            if root.get("event").and_then(|e| e.get("dataset")).is_none() {
                extra.insert("event.dataset".into(), vec![ds.clone().into()]);
            }
        }
        "metrics" => {
            extra.insert("processor.event".into(), vec!["metric".into()]);
            if let Some(ms) = root.get_mut("metricset").and_then(Value::as_object_mut) {
                if let Some(Value::Array(samples)) = ms.remove("samples") {
                    for s in samples {
                        let name = s["name"].as_str().unwrap_or("").to_owned();
                        let v = if s.get("values").is_some() {
                            serde_json::json!({"values": s["values"], "counts": s["counts"]})
                        } else {
                            s["value"].clone()
                        };
                        extra.insert(name, vec![v]);
                    }
                }
            }
        }
        _ => {}
    }
    let mut out = BTreeMap::new();
    flatten("", &doc, &mut out);
    out.extend(extra);
    // canonical IPs
    for (k, vals) in out.iter_mut() {
        if k.ends_with(".ip") {
            for v in vals.iter_mut() {
                if let Some(ip) = v.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                    *v = ip.to_string().into();
                }
            }
        }
    }
    out
}

fn ignored_key(k: &str) -> bool {
    k.ends_with(".text")
        || k.starts_with("client.geo.")
        || (k.starts_with("user_agent.") && k != "user_agent.original")
        || matches!(k, "observer.hostname" | "observer.version" | "ecs.version" | "event.ingested" | "observer.id" | "observer.ephemeral_id")
}

fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| values_eq(v, w)))
        }
        _ => a == b,
    }
}

const ID_KEYS: &[&str] = &["error.id", "span.id", "transaction.id", "trace.id", "message", "metricset.name", "data_stream.dataset", "@timestamp"];

/// Compares our documents with an approval file; returns mismatch descriptions.
fn compare_with_approval(ours: &[BTreeMap<String, Vec<Value>>], approval: &[Value], dynamic: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if ours.len() != approval.len() {
        problems.push(format!("doc count: ours {} approval {}", ours.len(), approval.len()));
    }
    for (i, ap) in approval.iter().enumerate() {
        let ap = ap.as_object().unwrap();
        let key_of = |m: &dyn Fn(&str) -> Option<Value>| ID_KEYS.iter().map(|k| m(k)).collect::<Vec<_>>();
        let ap_key = key_of(&|k| if dynamic.contains(&k) { None } else { ap.get(k).and_then(|v| v.get(0)).cloned() });
        let found = ours.iter().find(|o| {
            key_of(&|k| if dynamic.contains(&k) { None } else { o.get(k).and_then(|v| v.first()).cloned() }) == ap_key
        });
        let Some(o) = found else {
            problems.push(format!("approval doc {i} {ap_key:?}: no matching document"));
            continue;
        };
        for (k, v) in ap {
            if ignored_key(k) {
                continue;
            }
            match o.get(k) {
                None => problems.push(format!("doc {i}: missing {k} = {v}")),
                Some(_) if dynamic.contains(&k.as_str()) => {}
                Some(mine) => {
                    let mine = Value::Array(mine.clone());
                    if !values_eq(&mine, v) {
                        problems.push(format!("doc {i}: {k}: ours {mine} approval {v}"));
                    }
                }
            }
        }
        for k in o.keys() {
            if !ignored_key(k) && !ap.contains_key(k) {
                problems.push(format!("doc {i}: extra {k} = {:?}", o[k]));
            }
        }
    }
    problems
}

fn check_approval(file: &str, approval: &str, dynamic: &[&str]) -> Vec<String> {
    let Some(dir) = corpus_dir() else { return Vec::new() };
    let r = run_file(&dir.join("intake-v2"), file, false);
    assert!(r.meta_err.is_none() && r.errors.is_empty(), "{file}: {:?} {:?}", r.meta_err, r.errors);
    let docs: Vec<_> = encode_all(&r.events).iter().map(|(_, d)| fields_view(d)).collect();
    let ap: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("approvals").join(approval)).unwrap()).unwrap();
    compare_with_approval(&docs, &ap, dynamic)
}

const GEO_DYN: &[&str] = &["client.geo.city_name", "client.geo.location", "client.geo.region_iso_code", "client.geo.region_name"];

macro_rules! approval_test {
    ($name:ident, $file:expr, $approval:expr, $dyn:expr) => {
        #[test]
        fn $name() {
            let p = check_approval($file, $approval, $dyn);
            assert!(p.is_empty(), "{} mismatches:\n{}", p.len(), p.join("\n"));
        }
    };
}

approval_test!(approval_errors, "errors.ndjson", "TestIntake/Errors.approved.json", GEO_DYN);
approval_test!(approval_errors_txid, "errors_transaction_id.ndjson", "TestIntake/ErrorsTxID.approved.json", GEO_DYN);
approval_test!(approval_events, "events.ndjson", "TestIntake/Events.approved.json", GEO_DYN);
approval_test!(approval_metricsets, "metricsets.ndjson", "TestIntake/Metricsets.approved.json", GEO_DYN);
approval_test!(approval_spans, "spans.ndjson", "TestIntake/Spans.approved.json", GEO_DYN);
approval_test!(approval_transactions, "transactions.ndjson", "TestIntake/Transactions.approved.json", GEO_DYN);
approval_test!(approval_huge_traces, "transactions-huge_traces.ndjson", "TestIntake/TransactionsHugeTraces.approved.json", GEO_DYN);
approval_test!(approval_unknown_span_type, "unknown-span-type.ndjson", "TestIntake/UnknownSpanType.approved.json", GEO_DYN);
approval_test!(
    approval_minimal,
    "minimal.ndjson",
    "TestIntake/MinimalEvents.approved.json",
    &["@timestamp", "timestamp.us", "client.geo.city_name", "client.geo.location", "client.geo.region_iso_code", "client.geo.region_name"]
);
