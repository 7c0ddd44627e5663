//! Corpus-driven tests for the intake model (docs/intake.md): every
//! `intake-v2` payload decodes with the expected event/error counts, the
//! encoded `_source` matches the approvals after an emulation of the ES
//! `fields` view, exact error messages (docs/intake.md, Errors and their order),
//! grouping keys and a no-panic sweep over truncated/garbled lines.
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
    let mut run = Run {
        events: Vec::new(),
        errors: Vec::new(),
        meta_err: None,
    };
    let Some(first) = lines.next() else {
        return run;
    };
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
            let d: Value = serde_json::from_str(it.next().unwrap())
                .unwrap_or_else(|e| panic!("doc json {e}: {s}"));
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
        assert_eq!(
            r.meta_err.is_some(),
            me,
            "{f}: metadata error {:?}",
            r.meta_err
        );
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
// Elasticsearch `fields` emulation (what a search returns for a document) and approval comparison

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
        out.entry(prefix.to_owned())
            .or_default()
            .push(Value::Object(m));
        return;
    }
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, c, out);
            }
        }
        Value::Array(a) => {
            for e in a {
                flatten(prefix, e, out);
            }
        }
        Value::Null => {}
        other => out
            .entry(prefix.to_owned())
            .or_default()
            .push(other.clone()),
    }
}

fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, p| cur.get(p))
}

/// `_source` → `fields`, emulating the ES ingest pipelines and mappings.
fn fields_view(doc: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut doc = doc.clone();
    let ty = get_path(&doc, "data_stream.type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let ds = get_path(&doc, "data_stream.dataset")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut extra: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let root = doc.as_object_mut().unwrap();
    match ty.as_str() {
        "traces" => {
            let pe = if root
                .get("transaction")
                .and_then(|t| t.get("type"))
                .is_some()
            {
                "transaction"
            } else {
                "span"
            };
            extra.insert("processor.event".into(), vec![pe.into()]);
            let ev = root.get_mut("event").and_then(Value::as_object_mut);
            let dur = ev
                .as_ref()
                .and_then(|e| e.get("duration"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let outcome = ev
                .as_ref()
                .and_then(|e| e.get("outcome"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if let Some(e) = ev {
                e.remove("duration");
            }
            extra.insert(format!("{pe}.duration.us"), vec![(dur / 1000).into()]);
            let rc = root
                .get(pe)
                .and_then(|t| t.get("representative_count"))
                .and_then(Value::as_f64);
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
                let lm = root
                    .get("error")
                    .and_then(|e| e.get("log"))
                    .and_then(|l| l.get("message"))
                    .and_then(Value::as_str);
                let xm = root
                    .get("error")
                    .and_then(|e| e.get("exception"))
                    .and_then(|x| x.get(0))
                    .and_then(|x| x.get("message"))
                    .and_then(Value::as_str);
                if let Some(n) = lm
                    .filter(|s| !s.is_empty())
                    .or(xm.filter(|s| !s.is_empty()))
                {
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
        || matches!(
            k,
            "observer.hostname"
                | "observer.version"
                | "ecs.version"
                | "event.ingested"
                | "observer.id"
                | "observer.ephemeral_id"
        )
}

fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_eq(v, w)))
        }
        _ => a == b,
    }
}

const ID_KEYS: &[&str] = &[
    "error.id",
    "span.id",
    "transaction.id",
    "trace.id",
    "message",
    "metricset.name",
    "data_stream.dataset",
    "@timestamp",
];

/// Compares our documents with an approval file; returns mismatch descriptions.
fn compare_with_approval(
    ours: &[BTreeMap<String, Vec<Value>>],
    approval: &[Value],
    dynamic: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    if ours.len() != approval.len() {
        problems.push(format!(
            "doc count: ours {} approval {}",
            ours.len(),
            approval.len()
        ));
    }
    for (i, ap) in approval.iter().enumerate() {
        let ap = ap.as_object().unwrap();
        let key_of =
            |m: &dyn Fn(&str) -> Option<Value>| ID_KEYS.iter().map(|k| m(k)).collect::<Vec<_>>();
        let ap_key = key_of(&|k| {
            if dynamic.contains(&k) {
                None
            } else {
                ap.get(k).and_then(|v| v.get(0)).cloned()
            }
        });
        let found = ours.iter().find(|o| {
            key_of(&|k| {
                if dynamic.contains(&k) {
                    None
                } else {
                    o.get(k).and_then(|v| v.first()).cloned()
                }
            }) == ap_key
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

type Fields = BTreeMap<String, Vec<Value>>;

fn check_approval(file: &str, approval: &str, dynamic: &[&str]) -> Vec<String> {
    check_approval_filtered(file, approval, dynamic, &|_, _| true)
}

fn check_approval_filtered(
    file: &str,
    approval: &str,
    dynamic: &[&str],
    keep: &dyn Fn(&Fields, &[Value]) -> bool,
) -> Vec<String> {
    let Some(dir) = corpus_dir() else {
        return Vec::new();
    };
    let r = run_file(&dir.join("intake-v2"), file, false);
    assert!(
        r.meta_err.is_none() && r.errors.is_empty(),
        "{file}: {:?} {:?}",
        r.meta_err,
        r.errors
    );
    let ap: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("approvals").join(approval)).unwrap())
            .unwrap();
    let docs: Vec<_> = encode_all(&r.events)
        .iter()
        .map(|(_, d)| fields_view(d))
        .filter(|f| keep(f, &ap))
        .collect();
    compare_with_approval(&docs, &ap, dynamic)
}

const GEO_DYN: &[&str] = &[
    "client.geo.city_name",
    "client.geo.location",
    "client.geo.region_iso_code",
    "client.geo.region_name",
];

macro_rules! approval_test {
    ($name:ident, $file:expr, $approval:expr, $dyn:expr) => {
        #[test]
        fn $name() {
            let p = check_approval($file, $approval, $dyn);
            assert!(p.is_empty(), "{} mismatches:\n{}", p.len(), p.join("\n"));
        }
    };
}

approval_test!(
    approval_errors,
    "errors.ndjson",
    "TestIntake/Errors.approved.json",
    GEO_DYN
);
approval_test!(
    approval_errors_txid,
    "errors_transaction_id.ndjson",
    "TestIntake/ErrorsTxID.approved.json",
    GEO_DYN
);
approval_test!(
    approval_events,
    "events.ndjson",
    "TestIntake/Events.approved.json",
    GEO_DYN
);
approval_test!(
    approval_metricsets,
    "metricsets.ndjson",
    "TestIntake/Metricsets.approved.json",
    GEO_DYN
);
approval_test!(
    approval_spans,
    "spans.ndjson",
    "TestIntake/Spans.approved.json",
    GEO_DYN
);
approval_test!(
    approval_transactions,
    "transactions.ndjson",
    "TestIntake/Transactions.approved.json",
    GEO_DYN
);
approval_test!(
    approval_huge_traces,
    "transactions-huge_traces.ndjson",
    "TestIntake/TransactionsHugeTraces.approved.json",
    GEO_DYN
);
approval_test!(
    approval_unknown_span_type,
    "unknown-span-type.ndjson",
    "TestIntake/UnknownSpanType.approved.json",
    GEO_DYN
);
approval_test!(
    approval_minimal,
    "minimal.ndjson",
    "TestIntake/MinimalEvents.approved.json",
    &[
        "@timestamp",
        "timestamp.us",
        "client.geo.city_name",
        "client.geo.location",
        "client.geo.region_iso_code",
        "client.geo.region_name"
    ]
);

fn first_str<'a>(f: &'a Fields, k: &str) -> Option<&'a str> {
    f.get(k).and_then(|v| v.first()).and_then(Value::as_str)
}

#[test]
fn approval_error_ingest() {
    let p = check_approval_filtered(
        "errors.ndjson",
        "TestErrorIngest.approved.json",
        &[],
        &|f, _| {
            first_str(f, "data_stream.dataset") == Some("apm.error")
                && f.contains_key("transaction.name")
        },
    );
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn approval_metrics() {
    let p = check_approval_filtered(
        "metricsets.ndjson",
        "TestApprovedMetrics.approved.json",
        &[],
        &|f, _| {
            first_str(f, "processor.event") == Some("metric")
                && first_str(f, "metricset.name") != Some("transaction")
        },
    );
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn approval_intake_logs() {
    for case in [
        "with_faas",
        "with_flat_ecs_fields",
        "with_nested_ecs_fields",
        "with_nested_ecs_fields_overrides_flat_fields",
        "with_timestamp",
        "with_timestamp_as_str",
        "without_timestamp",
    ] {
        let dynamic: &[&str] = if case == "without_timestamp" {
            &["@timestamp"]
        } else {
            &[]
        };
        let p = check_approval_filtered(
            "logs.ndjson",
            &format!("TestIntakeLog/{case}.approved.json"),
            dynamic,
            &|f, ap| {
                let msg = ap
                    .first()
                    .and_then(|d| d.get("message"))
                    .and_then(|m| m.get(0))
                    .and_then(Value::as_str);
                first_str(f, "message") == msg && first_str(f, "data_stream.type") == Some("logs")
            },
        );
        assert!(p.is_empty(), "{case}: {}", p.join("\n"));
    }
}

#[test]
fn comparator_detects_mismatch() {
    let Some(dir) = corpus_dir() else { return };
    let r = run_file(&dir.join("intake-v2"), "minimal.ndjson", false);
    let mut docs: Vec<_> = encode_all(&r.events)
        .iter()
        .map(|(_, d)| fields_view(d))
        .collect();
    for d in docs.iter_mut() {
        d.insert("service.name".into(), vec!["other".into()]);
    }
    let ap: Vec<Value> = serde_json::from_slice(
        &std::fs::read(dir.join("approvals/TestIntake/MinimalEvents.approved.json")).unwrap(),
    )
    .unwrap();
    assert!(!compare_with_approval(&docs, &ap, &["@timestamp", "timestamp.us"]).is_empty());
}

// ---------------------------------------------------------------------------
// exact documents and messages

const META: &str = r#"{"metadata":{"service":{"name":"1234_service-12a3","agent":{"name":"elastic-node","version":"3.14.0"}}}}"#;

fn decode_one(meta: &str, line: &str, rum: bool) -> Result<Vec<Event>, LineError> {
    let mut d = Decoder::new(DecodeConfig::default());
    let m = d.decode_metadata(meta.as_bytes(), &base(rum))?;
    let mut out = Vec::new();
    d.decode_event(line.as_bytes(), &m, &mut out)?;
    Ok(out)
}

fn err_of(line: &str) -> String {
    decode_one(META, line, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

fn doc_of(line: &str, rum: bool) -> (String, Value) {
    let evs = decode_one(META, line, rum).expect("decodes");
    let mut buf = Vec::new();
    assert!(encode(&evs[0], &ctx(), &mut buf));
    let s = String::from_utf8(buf).unwrap();
    let (a, d) = s.split_once('\n').unwrap();
    (a.to_owned(), serde_json::from_str(d.trim_end()).unwrap())
}

#[test]
fn minimal_transaction_source() {
    let (action, doc) = doc_of(
        r#"{"transaction":{"trace_id":"01234567890123456789abcdefabcdef","id":"abcdef1478523690","type":"request","duration":32.592981,"span_count":{"started":0}}}"#,
        false,
    );
    assert_eq!(action, r#"{"create":{"_index":"traces-apm-default"}}"#);
    let expected = serde_json::json!({
        "@timestamp": "2023-11-14T22:13:20.123Z",
        "agent": {"name": "elastic-node", "version": "3.14.0"},
        "data_stream": {"type": "traces", "dataset": "apm", "namespace": "default"},
        "event": {"outcome": "unknown", "duration": 32592981},
        "host": {"ip": ["127.0.0.1"]},
        "observer": {"hostname": "host", "type": "apm-server", "version": "9.6.0"},
        "service": {"name": "1234_service-12a3"},
        "span": {"id": "abcdef1478523690"},
        "timestamp": {"us": T_NS / 1000},
        "trace": {"id": "01234567890123456789abcdefabcdef"},
        "transaction": {"id": "abcdef1478523690", "type": "request", "sampled": true,
                        "representative_count": 1, "span_count": {"started": 0}}
    });
    assert_eq!(doc, expected);
}

#[test]
fn line_error_messages() {
    // case C.23: a type error is a decode error
    let e = err_of(
        r#"{ "transaction": { "id": 12345, "trace_id": "0123456789abcdef0123456789abcdef", "parent_id": "abcdefabcdef01234567", "type": "request", "duration": 32.592981, "span_count": { "started": 21 } } }   "#,
    );
    assert!(e.starts_with("decode error: data read error: "), "{e}");
    // C.24 / C.28
    assert_eq!(
        err_of(r#"{ "invalid-json" }"#),
        r#"did not recognize object type: "invalid-json""#
    );
    assert_eq!(
        err_of(r#"{"tennis-court": {"name": "Centre Court, Wimbledon"}}"#),
        r#"did not recognize object type: "tennis-court""#
    );
    assert_eq!(err_of("   "), r#"did not recognize object type: """#);
    // C.25–C.27: metadata
    let mut d = Decoder::new(DecodeConfig::default());
    let m = |d: &mut Decoder, l: &str| {
        d.decode_metadata(l.as_bytes(), &base(false))
            .err()
            .unwrap()
            .to_string()
    };
    assert!(m(&mut d, r#"{"metadata": {"invalid-json"}}"#)
        .starts_with("decode error: data read error: "));
    assert_eq!(
        m(&mut d, r#"{"metadata": {"user": null}}"#),
        "validation error: 'metadata' required"
    );
    assert_eq!(
        m(&mut d, r#"{"not": "metadata"}"#),
        r#""metadata" or "m" required"#
    );
    assert_eq!(m(&mut d, ""), r#""metadata" or "m" required"#);
    assert_eq!(
        m(
            &mut d,
            r#"{"metadata":{"service":{"agent":{"name":"a","version":"1"}}}}"#
        ),
        "validation error: metadata: service: 'name' required"
    );
    assert_eq!(
        m(&mut d, r#"{"metadata":{"service":{"name":"a!","agent":{"name":"a","version":"1"}}}}"#),
        "validation error: metadata: service: 'name': validation rule 'pattern(patternAlphaNumericExt)' violated"
    );
    assert_eq!(
        m(
            &mut d,
            r#"{"metadata":{"service":{"name":"a","agent":{"name":"a","version":"1"}},"cloud":{"region":"x"}}}"#
        ),
        "validation error: metadata: cloud: 'provider' required"
    );
    let long = "é".repeat(1025);
    assert_eq!(
        m(&mut d, &format!(r#"{{"metadata":{{"service":{{"name":"a","environment":"{long}","agent":{{"name":"a","version":"1"}}}}}}}}"#)),
        "validation error: metadata: service: 'environment': validation rule 'maxLength(1024)' violated"
    );
    // 1024 code points (2048 bytes) pass
    let ok = "é".repeat(1024);
    assert!(d
        .decode_metadata(
            format!(r#"{{"metadata":{{"service":{{"name":"a","environment":"{ok}","agent":{{"name":"a","version":"1"}}}},"cloud":{{}}}}}}"#).as_bytes(),
            &base(false)
        )
        .is_ok());
    // the message examples of docs/intake.md, Errors and their order
    assert_eq!(
        err_of(
            r#"{"transaction":{"trace_id":"x","id":"y","type":"t","duration":1,"span_count":{"dropped":1}}}"#
        ),
        "validation error: transaction: span_count: 'started' required"
    );
    assert_eq!(
        err_of(
            r#"{"transaction":{"trace_id":"x","id":"y","type":"t","duration":-1,"span_count":{"started":1}}}"#
        ),
        "validation error: transaction: 'duration': validation rule 'min(0)' violated"
    );
    assert_eq!(
        err_of(
            r#"{"transaction":{"trace_id":"x","id":"y","type":"t","duration":1,"outcome":"meh","span_count":{"started":1}}}"#
        ),
        "validation error: transaction: 'outcome': validation rule 'enum(enumOutcome)' violated"
    );
    assert_eq!(
        err_of(r#"{"transaction":{}}"#),
        "validation error: 'transaction' required"
    );
    assert_eq!(
        err_of(r#"{"error":{"id":"x","trace_id":"t"}}"#),
        "validation error: error: requires at least one of the fields 'exception;log'"
    );
    assert_eq!(
        err_of(r#"{"error":{"id":"x","trace_id":"t","log":{"message":"m"}}}"#),
        "validation error: error: 'parent_id' required when 'trace_id' is set"
    );
    assert_eq!(
        err_of(r#"{"error":{"id":"x","exception":{"message":"m","cause":[null]}}}"#),
        "validation error: error: exception: cause slice element required"
    );
    assert_eq!(
        err_of(r#"{"error":{"id":"x","exception":{"message":"m","stacktrace":[{"lineno":1}]}}}"#),
        "validation error: error: exception: stacktrace: requires at least one of the fields 'classname;filename'"
    );
    assert_eq!(
        err_of(
            r#"{"span":{"id":"x","trace_id":"t","parent_id":"p","name":"n","type":"t","duration":1}}"#
        ),
        "validation error: span: requires at least one of the fields 'start;timestamp'"
    );
    assert_eq!(
        err_of(
            r#"{"span":{"id":"x","trace_id":"t","parent_id":"p","name":"n","type":"t","start":1,"duration":1,"context":{"destination":{"service":{"name":"a"}}}}}"#
        ),
        "validation error: span: context: destination: service: 'resource' required"
    );
    assert_eq!(
        err_of(r#"{"metricset":{"samples":{}}}"#),
        "validation error: 'metricset' required"
    );
    assert_eq!(
        err_of(r#"{"metricset":{"samples":{},"tags":{"a":"b"}}}"#),
        "validation error: metricset: 'samples' required"
    );
    assert_eq!(
        err_of(r#"{"metricset":{"samples":{"a*":{"value":1}}}}"#),
        "validation error: metricset: 'samples': validation rule 'patternKeys(patternNoAsteriskQuote)' violated"
    );
    assert_eq!(
        err_of(r#"{"metricset":{"samples":{"a":{"values":[1]}}}}"#),
        "validation error: metricset: samples: 'counts' required when 'values' is set"
    );
    assert_eq!(
        err_of(r#"{"metricset":{"samples":{"a":{"value":1}},"tags":{"x":{"y":1}}}}"#),
        "validation error: metricset: 'tags': validation rule 'inputTypesVals(string;bool;number)' violated for key x"
    );
    assert_eq!(
        err_of(r#"{"transaction":{"trace_id":"x","id":"y","type":"t","duration":1,"span_count":{"started":1},"context":{"request":{"url":{"port":"abc"},"method":"GET"}}}}"#),
        "validation error: transaction: context: request: url: 'port': validation rule 'targetType(int)' violated"
    );
    // type errors are decode errors
    assert!(err_of(r#"{"span":{"id":"x","trace_id":"t","parent_id":"p","name":"n","type":"t","start":1,"duration":"1"}}"#)
        .starts_with("decode error: data read error: "));
    assert!(err_of(r#"{"transaction":{"trace_id":"x","id":"y","type":"t","duration":1,"span_count":{"started":1.5}}}"#)
        .starts_with("decode error: data read error: "));
    assert!(err_of(r#"{"transaction":{"trace_id":"x","id":"y","type":"t","duration":1,"span_count":{"started":1},"context":{"request":{"method":"GET","headers":{"a":1}}}}}"#)
        .starts_with("decode error: data read error: "));
    assert!(
        err_of(r#"{"log":{"@timestamp":"yesterday","message":"x"}}"#)
            .starts_with("decode error: data read error: ")
    );
    // trailing garbage after the first value is ignored
    assert!(decode_one(META, r#"{"log":{"message":"x"}}`garbage"#, false).is_ok());
}

#[test]
fn grouping_keys_minimal() {
    let key = |l: &str| match &decode_one(META, l, false).unwrap()[0].body {
        event::Body::Error(e) => e.grouping_key.clone(),
        _ => panic!("not an error"),
    };
    assert_eq!(
        key(r#"{"error":{"id":"a","log":{"message":"x"}}}"#).len(),
        16
    );
    let Some(dir) = corpus_dir() else { return };
    let r = run_file(&dir.join("intake-v2"), "minimal.ndjson", false);
    let keys: Vec<String> = r
        .events
        .iter()
        .filter_map(|e| match &e.body {
            event::Body::Error(e) => Some(e.grouping_key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        ["e7427150b064c482", "5914882bfc6424ff", "0726afd6fffc5433"]
    );
    let r = run_file(&dir.join("intake-v2"), "errors.ndjson", false);
    let by_id: BTreeMap<String, String> = r
        .events
        .iter()
        .filter_map(|e| match &e.body {
            event::Body::Error(e) => Some((e.id.clone(), e.grouping_key.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(by_id["0123456789012345"], "637be2ded470655b");
    assert_eq!(by_id["xFoaabb123FFFFFF"], "256d70df2f0019ed");
    assert_eq!(by_id["cdefab0123456789"], "89f9636ef3381842");
    assert_eq!(by_id["cdefab0123456780"], "60b29d2f9dafe754");
    assert_eq!(by_id["abcdef0123456789"], "5be7ecce1b964f32");
}

#[test]
fn rum_request_fields_and_routing() {
    let meta = r#"{"metadata":{"service":{"name":"rum-js-test","agent":{"name":"rum-js","version":"5.5.0"}}}}"#;
    let mut d = Decoder::new(DecodeConfig::default());
    let mut b = base(true);
    b.client_ip = Some("220.244.41.16".parse().unwrap());
    b.nat_ip = Some("127.0.0.1".parse().unwrap());
    b.source_port = None;
    let m = d.decode_metadata(meta.as_bytes(), &b).unwrap();
    let mut evs = Vec::new();
    d.decode_event(
        br#"{"transaction":{"trace_id":"611f4fa950f04631aaaaaaaaaaaaaaaa","id":"611f4fa950f04631","type":"page-load","duration":643,"span_count":{"started":0},"sampled":false}}"#,
        &m,
        &mut evs,
    )
    .unwrap();
    d.decode_event(
        br#"{"metricset":{"samples":{"transaction.breakdown.count":{"value":12},"span.self_time.count":{"value":1},"span.self_time.sum.us":{"value":633.288}},"transaction":{"type":"request","name":"GET /"},"span":{"type":"external","subtype":"http"},"timestamp": 1496170422281000}}"#,
        &m,
        &mut evs,
    )
    .unwrap();
    let docs = encode_all(&evs);
    assert_eq!(docs.len(), 2, "unsampled RUM transaction is kept");
    let (a, t) = &docs[0];
    assert_eq!(a["create"]["_index"], "traces-apm.rum-default");
    assert_eq!(t["client"]["ip"], "220.244.41.16");
    assert_eq!(t["source"]["ip"], "220.244.41.16");
    assert_eq!(t["source"]["nat"]["ip"], "127.0.0.1");
    assert_eq!(t["user_agent"]["original"], "test-agent/1.0");
    assert!(t.get("host").is_none());
    assert!(t["transaction"].get("sampled").is_none());
    assert_eq!(t["event"]["duration"], 643_000_000);
    let (a, ms) = &docs[1];
    assert_eq!(a["create"]["_index"], "metrics-apm.internal-default");
    assert_eq!(ms["metricset"]["name"], "span_breakdown");
    assert_eq!(ms["span"]["self_time"]["count"], 1);
    assert_eq!(ms["span"]["self_time"]["sum.us"], 633);
    assert!(ms["metricset"].get("samples").is_none());
    assert!(ms.get("timestamp").is_none());

    // backend unsampled transaction is dropped (but decoded)
    let evs = decode_one(
        META,
        r#"{"transaction":{"trace_id":"xyz","id":"yz","type":"TestDropUnsampled","duration":0,"span_count":{"started":1},"sampled":false}}"#,
        false,
    )
    .unwrap();
    assert_eq!(evs.len(), 1);
    let mut buf = Vec::new();
    assert!(!encode(&evs[0], &ctx(), &mut buf));
    assert!(buf.is_empty());
}

#[test]
fn labels_overrides_and_logs() {
    let meta = r#"{"metadata":{"labels":{"a":"meta","n":1},"service":{"name":"svc","version":"1.0","agent":{"name":"go","version":"1"}},"system":{"container":{"id":"cid"}}}}"#;
    let evs = decode_one(
        meta,
        r#"{"error":{"id":"e1","log":{"message":"m"},"context":{"tags":{"a":2,"b":true,"c":null},"service":{"name":"other"}}}}"#,
        false,
    )
    .unwrap();
    let doc = encode_all(&evs).remove(0).1;
    assert_eq!(doc["labels"]["a"], "meta");
    assert_eq!(doc["numeric_labels"]["a"], 2.0);
    assert_eq!(doc["labels"]["b"], "true");
    assert_eq!(doc["numeric_labels"]["n"], 1.0);
    assert_eq!(doc["service"]["name"], "other");
    assert!(
        doc["service"].get("version").is_none(),
        "version reset by name override"
    );
    assert_eq!(doc["service"]["node"]["name"], "cid");
    assert_eq!(doc["message"], "m");
    assert_eq!(doc["error"]["log"]["level"], "error");
    // log with error fields becomes an error document
    let evs = decode_one(
        meta,
        r#"{"log":{"message":"boom","error.type":"E"}}"#,
        false,
    )
    .unwrap();
    let (a, doc) = encode_all(&evs).remove(0);
    assert_eq!(a["create"]["_index"], "logs-apm.error-default");
    assert_eq!(doc["error"]["grouping_key"], "ef46db3751d8e999");
    assert!(doc.get("event").is_none());
    let evs = decode_one(
        meta,
        r#"{"log":{"message":"hi","service.name":"My Svc"}}"#,
        false,
    )
    .unwrap();
    let (a, doc) = encode_all(&evs).remove(0);
    assert_eq!(a["create"]["_index"], "logs-apm.app.my_svc-default");
    assert_eq!(doc["event"]["kind"], "event");
    assert!(doc.get("timestamp").is_none());
}

#[test]
fn default_service_environment() {
    let mut d = Decoder::new(DecodeConfig {
        default_service_environment: "prod".into(),
    });
    let m = d.decode_metadata(META.as_bytes(), &base(false)).unwrap();
    let mut evs = Vec::new();
    d.decode_event(br#"{"log":{"message":"x"}}"#, &m, &mut evs)
        .unwrap();
    assert_eq!(encode_all(&evs)[0].1["service"]["environment"], "prod");
}

// ---------------------------------------------------------------------------
// robustness: truncated and garbled lines never panic

#[test]
fn garbled_lines_never_panic() {
    let Some(dir) = corpus_dir() else { return };
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let files: Vec<PathBuf> = ["intake-v2", "intake-v3"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dir.join(d))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .collect();
    for p in files {
        let data = std::fs::read(&p).unwrap();
        let lines: Vec<&[u8]> = data
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .take(40)
            .collect();
        let Some(first) = lines.first() else { continue };
        let mut d = Decoder::new(DecodeConfig::default());
        for rum in [false, true] {
            let Ok(meta) = d.decode_metadata(first, &base(rum)) else {
                continue;
            };
            for l in &lines {
                let mut variants: Vec<Vec<u8>> = Vec::new();
                let step = (l.len() / 25).max(1);
                for cut in (0..l.len()).step_by(step) {
                    variants.push(l[..cut].to_vec());
                }
                for _ in 0..20 {
                    let mut v = l.to_vec();
                    if v.is_empty() {
                        break;
                    }
                    let i = (rnd() as usize) % v.len();
                    v[i] = b"{}[]\",:0-e.\\ \xff"[(rnd() as usize) % 14];
                    variants.push(v);
                }
                for v in variants {
                    let mut out = Vec::new();
                    let _ = d.decode_metadata(&v, &base(rum));
                    if d.decode_event(&v, &meta, &mut out).is_ok() {
                        let mut buf = Vec::new();
                        for ev in &out {
                            encode(ev, &ctx(), &mut buf);
                        }
                        for doc in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                            assert!(
                                serde_json::from_slice::<Value>(doc).is_ok(),
                                "invalid JSON: {}",
                                String::from_utf8_lossy(doc)
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[ignore]
fn dump_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let f = std::env::var("DUMP").unwrap_or_default();
    for entry in std::fs::read_dir(dir.join("intake-v2")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !f.is_empty() && !name.contains(&f) {
            continue;
        }
        let rum = name.contains("rum");
        let r = run_file(&dir.join("intake-v2"), &name, rum);
        eprintln!(
            "== {name}: {} events, errors {:?}, meta {:?}",
            r.events.len(),
            r.errors,
            r.meta_err
        );
        if !f.is_empty() {
            for (a, d) in encode_all(&r.events) {
                eprintln!("{a}\n{d}");
            }
        }
    }
}

fn rum_base(client: &str, nat: Option<&str>, port: Option<u16>) -> RequestBase {
    RequestBase {
        received_ns: T_NS,
        rum: true,
        client_ip: client.parse().ok(),
        source_port: port,
        nat_ip: nat.and_then(|n| n.parse().ok()),
        user_agent: Some("Go-http-client/1.1".into()),
    }
}

fn run_with_base(data: &[u8], b: &RequestBase) -> Vec<Event> {
    let mut d = Decoder::new(DecodeConfig::default());
    let mut lines = data.split(|&c| c == b'\n').filter(|l| !l.is_empty());
    let meta = d
        .decode_metadata(lines.next().unwrap(), b)
        .expect("metadata");
    let mut out = Vec::new();
    for l in lines {
        d.decode_event(l, &meta, &mut out).expect("event");
    }
    out
}

fn compare_events(
    events: &[Event],
    approval: &str,
    dynamic: &[&str],
    keep: &dyn Fn(&Fields) -> bool,
) -> Vec<String> {
    let Some(dir) = corpus_dir() else {
        return Vec::new();
    };
    let ap: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir.join("approvals").join(approval)).unwrap())
            .unwrap();
    let ap: Vec<Value> = ap
        .into_iter()
        .filter(|a| {
            let f: Fields = a
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
                .collect();
            keep(&f)
        })
        .collect();
    let docs: Vec<_> = encode_all(events)
        .iter()
        .map(|(_, d)| fields_view(d))
        .filter(|f| keep(f))
        .collect();
    compare_with_approval(&docs, &ap, dynamic)
}

#[test]
fn approval_rum_x_forwarded_for() {
    let payload = br#"{"metadata":{"service":{"name":"rum-js-test","agent":{"name":"rum-js","version":"5.5.0"}}}}
{"transaction":{"trace_id":"611f4fa950f04631aaaaaaaaaaaaaaaa","id":"611f4fa950f04631","type":"page-load","duration":643,"span_count":{"started":0}}}
{"metricset":{"samples":{"transaction.breakdown.count":{"value":12},"transaction.duration.sum.us":{"value":12},"transaction.duration.count":{"value":2},"transaction.self_time.sum.us":{"value":10},"transaction.self_time.count":{"value":2},"span.self_time.count":{"value":1},"span.self_time.sum.us":{"value":633.288}},"transaction":{"type":"request","name":"GET /"},"span":{"type":"external","subtype":"http"},"timestamp": 1496170422281000}}
"#;
    let evs = run_with_base(payload, &rum_base("220.244.41.16", Some("127.0.0.1"), None));
    let dynamic = ["@timestamp", "timestamp.us", "source.port"];
    let p = compare_events(
        &evs,
        "TestRUMXForwardedFor.approved.json",
        &dynamic,
        &|_| true,
    );
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn approval_rum_drop_unsampled() {
    let payload = br#"{"metadata":{"service":{"name":"allowed","version":"1.0.0","agent":{"name":"rum-js","version":"0.0.0"}}}}
{"transaction":{"trace_id":"x","id":"y","type":"TestDropUnsampled","duration":0,"span_count":{"started":1},"sampled":false,"context":{"service":{"name":"allowed"}}}}
"#;
    let evs = run_with_base(payload, &rum_base("127.0.0.1", None, Some(40000)));
    let dynamic = [
        "@timestamp",
        "timestamp.us",
        "source.port",
        "trace.id",
        "transaction.id",
        "span.id",
    ];
    let p = compare_events(&evs, "TestDropUnsampled.approved.json", &dynamic, &|f| {
        first_str(f, "agent.name") == Some("rum-js")
    });
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn approval_rum_spans_without_sourcemap() {
    let Some(dir) = corpus_dir() else { return };
    let data = std::fs::read(dir.join("intake-v2/transactions_spans_rum_2.ndjson")).unwrap();
    let evs = run_with_base(&data, &rum_base("127.0.0.1", None, Some(40000)));
    let dynamic = ["@timestamp", "timestamp.us", "source.port"];
    let p = compare_events(
        &evs,
        "TestNoMatchingSourcemap.approved.json",
        &dynamic,
        &|f| first_str(f, "processor.event") == Some("span"),
    );
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn odd_service_names_stay_valid_json() {
    let evs = decode_one(
        META,
        r#"{"log":{"message":"x","service.name":"a\u0001\"b\\c"}}"#,
        false,
    )
    .unwrap();
    let (a, _) = encode_all(&evs).remove(0);
    assert_eq!(a["create"]["_index"], "logs-apm.app.a\u{1}_b_c-default");
}

// ---------------------------------------------------------------------------
// RUM v3

#[test]
fn v3_corpus_decodes() {
    let Some(dir) = corpus_dir() else { return };
    let r = run_file(&dir.join("intake-v3"), "rum_events.ndjson", true);
    assert!(
        r.meta_err.is_none() && r.errors.is_empty(),
        "{:?} {:?}",
        r.meta_err,
        r.errors
    );
    let kinds: Vec<&str> = r.events.iter().map(Event::kind).collect();
    assert_eq!(kinds.len(), 11, "{kinds:?}");
    assert_eq!(&kinds[..3], ["transaction", "metric", "metric"]);
    assert!(kinds[3..].iter().all(|k| *k == "span"));
    let r = run_file(&dir.join("intake-v3"), "rum_errors.ndjson", true);
    assert!(
        r.meta_err.is_none() && r.errors.is_empty(),
        "{:?} {:?}",
        r.meta_err,
        r.errors
    );
    assert_eq!(r.events.len(), 1);
    let docs = encode_all(&r.events);
    assert_eq!(docs[0].1["error"]["exception"][0]["type"], "Error");
    let r = run_file(&dir.join("intake-v3"), "metadata.ndjson", true);
    assert!(r.meta_err.is_none(), "{:?}", r.meta_err);
}

#[test]
fn approval_rum_v3_routing() {
    let Some(dir) = corpus_dir() else { return };
    let data = std::fs::read(dir.join("intake-v3/rum_events.ndjson")).unwrap();
    let evs = run_with_base(&data, &rum_base("127.0.0.1", None, Some(40000)));
    let docs = encode_all(&evs);
    let me = docs
        .iter()
        .find(|(a, _)| a["create"]["_index"] == "metrics-apm.internal-default")
        .unwrap();
    assert_eq!(me.1["metricset"], serde_json::json!({}));
    let dynamic = [
        "@timestamp",
        "timestamp.us",
        "source.port",
        "source.ip",
        "client.ip",
    ];
    let p = compare_events(
        &evs,
        "TestRUMRoutingIntegration.approved.json",
        &dynamic,
        &|f| first_str(f, "data_stream.dataset") == Some("apm.rum"),
    );
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn v3_messages() {
    let meta = r#"{"m":{"se":{"n":"svc","a":{"n":"rum-js","ve":"1"}}}}"#;
    let err = |l: &str| {
        decode_one(meta, l, true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        err(r#"{"x":{"id":"a","tid":"b","t":"p","yc":{"sd":1}}}"#),
        "validation error: x: 'd' required"
    );
    assert_eq!(
        err(
            r#"{"x":{"id":"a","tid":"b","t":"p","d":1,"yc":{"sd":1},"y":[{"id":"s","n":"n","t":"t","d":1}]}}"#
        ),
        "validation error: x: y: 's' required"
    );
    assert_eq!(
        err(r#"{"e":{"id":"a"}}"#),
        "validation error: e: requires at least one of the fields 'ex;log'"
    );
    let mut d = Decoder::new(DecodeConfig::default());
    assert_eq!(
        d.decode_metadata(br#"{"m":{"se":{"n":"svc"}}}"#, &base(true))
            .err()
            .unwrap()
            .to_string(),
        "validation error: m: se: 'a' required"
    );
    // v2 keys are accepted after v3 metadata and vice versa
    assert!(decode_one(meta, r#"{"log":{"message":"x"}}"#, true).is_ok());
    assert!(decode_one(META, r#"{"e":{"id":"a","log":{"mg":"x"}}}"#, false).is_ok());
}

/// The same two violations in a v2 and a v3 line: each dialect reports the
/// one its upstream struct checks first (the rule tables' order).
#[test]
fn each_dialect_reports_the_violation_its_order_checks_first() {
    let v3_meta = r#"{"m":{"se":{"n":"svc","a":{"n":"rum-js","ve":"1"}}}}"#;
    let err = |meta: &str, l: &str, rum: bool| {
        decode_one(meta, l, rum)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // error: no id, and an exception with neither message nor type
    assert_eq!(
        err(META, r#"{"error":{"exception":{"module":"m"}}}"#, false),
        "validation error: error: 'id' required"
    );
    assert_eq!(
        err(v3_meta, r#"{"e":{"ex":{"mo":"m"}}}"#, true),
        "validation error: e: ex: requires at least one of the fields 'mg;t'"
    );
    // transaction: neither id nor trace id
    assert_eq!(
        err(
            META,
            r#"{"transaction":{"type":"t","duration":1,"span_count":{"started":1}}}"#,
            false
        ),
        "validation error: transaction: 'trace_id' required"
    );
    assert_eq!(
        err(v3_meta, r#"{"x":{"t":"p","d":1,"yc":{"sd":1}}}"#, true),
        "validation error: x: 'id' required"
    );
    // span: no name and a negative duration
    assert_eq!(
        err(
            META,
            r#"{"span":{"id":"s","trace_id":"t","parent_id":"p","type":"db","start":1,"duration":-1}}"#,
            false
        ),
        "validation error: span: 'name' required"
    );
    assert_eq!(
        err(
            v3_meta,
            r#"{"x":{"id":"a","tid":"b","t":"p","d":1,"yc":{"sd":1},"y":[{"id":"s","t":"db","s":1,"d":-1}]}}"#,
            true
        ),
        "validation error: x: y: 'd': validation rule 'min(0)' violated"
    );
}

#[test]
fn integer_and_float_formatting() {
    let (_, doc) = doc_of(
        r#"{"span":{"id":"x","trace_id":"t","parent_id":"p","name":"n","type":"db.pg.q","start":1.5,"duration":0.988,"sample_rate":0.3,"context":{"db":{"rows_affected":-12}}}}"#,
        false,
    );
    assert_eq!(doc["span"]["db"]["rows_affected"], -12);
    assert_eq!(doc["event"]["duration"], 988000);
    assert_eq!(doc["span"]["subtype"], "pg");
    assert_eq!(
        doc["span"]["representative_count"].as_f64(),
        Some(1.0 / 0.3)
    );
    assert_eq!(doc["timestamp"]["us"], (T_NS + 1_500_000) / 1000);
}

#[test]
fn rum_frame_rules_and_grouping() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<Metadata>();
    fn assert_event<T: Send + Clone + std::fmt::Debug>() {}
    assert_event::<Event>();
    let rules = RumFrameRules::new("node_modules|bower_components|~", "^/webpack").unwrap();
    let meta = r#"{"metadata":{"service":{"name":"svc","agent":{"name":"rum-js","version":"1"}}}}"#;
    let line = r#"{"error":{"id":"e","exception":{"type":"T","stacktrace":[{"filename":"/webpack/a.js","function":"f"},{"filename":"node_modules/x.js","function":"g","library_frame":false}]}}}"#;
    let mut evs = decode_one(meta, line, true).unwrap();
    let before = match &evs[0].body {
        event::Body::Error(e) => e.grouping_key.clone(),
        _ => unreachable!(),
    };
    evs[0].apply_rum_frame_rules(&rules);
    evs[0].apply_rum_frame_rules(&rules);
    let doc = encode_all(&evs).remove(0).1;
    let st = &doc["error"]["exception"][0]["stacktrace"];
    assert_eq!(st[0]["exclude_from_grouping"], true);
    assert_eq!(st[1]["library_frame"], true);
    assert!(st[1]["original"].get("library_frame").is_none(), "{st}");
    let after = doc["error"]["grouping_key"].as_str().unwrap();
    assert_ne!(before, after, "excluded frame changes the key");
    // errors with transaction_id are treated as spans: frames untouched
    let line = r#"{"error":{"id":"e","trace_id":"t","parent_id":"p","transaction_id":"x","exception":{"type":"T","stacktrace":[{"filename":"/webpack/a.js"}]}}}"#;
    let mut evs = decode_one(meta, line, true).unwrap();
    evs[0].apply_rum_frame_rules(&rules);
    let doc = encode_all(&evs).remove(0).1;
    assert_eq!(
        doc["error"]["exception"][0]["stacktrace"][0]["exclude_from_grouping"],
        false
    );
}

#[test]
fn escaping_matches_serde_json() {
    let samples = [
        "plain ascii text that is long enough for words",
        "quote\" backslash\\ newline\n tab\t cr\r ctrl\u{1}\u{1f} end",
        "unicode é ü 日本語 \u{7f} \u{80} mixed \"x\"",
        "",
        "12345678\"",
        "\\\\\\\\\\\\\\\\",
    ];
    for s in samples {
        let mut ours = Vec::new();
        encode::escape_for_test(&mut ours, s);
        let back: String = serde_json::from_slice(&ours).unwrap();
        assert_eq!(back, s);
    }
    for i in 0u32..2000 {
        let s: String = (0..(i % 40))
            .map(|k| char::from_u32((i * 7 + k * 13) % 140).unwrap_or('x'))
            .collect();
        let mut ours = Vec::new();
        encode::escape_for_test(&mut ours, &s);
        let back: String = serde_json::from_slice(&ours).unwrap();
        assert_eq!(back, s);
    }
}

#[test]
fn cached_fragments_follow_overrides() {
    let mut d = Decoder::new(DecodeConfig::default());
    let m = d.decode_metadata(META.as_bytes(), &base(false)).unwrap();
    let mut evs = Vec::new();
    d.decode_event(br#"{"log":{"message":"a"}}"#, &m, &mut evs)
        .unwrap();
    let first = encode_all(&evs);
    assert_eq!(first[0].1["service"]["name"], "1234_service-12a3");
    d.decode_event(
        br#"{"log":{"message":"b","service.name":"other"}}"#,
        &m,
        &mut evs,
    )
    .unwrap();
    d.decode_event(
        br#"{"error":{"id":"x","log":{"message":"m"},"context":{"service":{"agent":{"name":"zz"}}}}}"#,
        &m,
        &mut evs,
    )
    .unwrap();
    let docs = encode_all(&evs);
    assert_eq!(docs[0].1["service"]["name"], "1234_service-12a3");
    assert_eq!(docs[1].1["service"]["name"], "other");
    assert_eq!(docs[2].1["agent"]["name"], "zz");
    assert_eq!(docs[2].1["agent"]["version"], "3.14.0");
}

#[test]
fn unknown_keys_do_not_make_a_root_set() {
    let mut d = Decoder::new(DecodeConfig::default());
    let e = d
        .decode_metadata(br#"{"metadata":{"foo":1}}"#, &base(false))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "validation error: 'metadata' required");
    assert_eq!(
        err_of(r#"{"span":{"bar":"x"}}"#),
        "validation error: 'span' required"
    );
    // unknown keys are otherwise ignored
    assert!(decode_one(META, r#"{"log":{"message":"x","whatever":{"a":1}}}"#, false).is_ok());
}
