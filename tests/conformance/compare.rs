//! The approval comparison of the upstream system tests: dynamic fields,
//! the document sort order, deep equality, and a readable diff. Also the
//! exclusions for what `emulate.rs` cannot reproduce (GeoIP, user agents
//! outside the corpus families), applied to both sides.

use crate::emulate::{ua_is_emulated, Fields};
use serde_json::Value;
use std::cmp::Ordering;

/// Always dynamic (§18.1 step 4).
pub const DEFAULT_DYNAMIC: &[&str] = &[
    "ecs.version",
    "event.ingested",
    "observer.ephemeral_id",
    "observer.hostname",
    "observer.id",
    "observer.version",
];

/// Removes, from either side, the fields whose values depend on data the
/// harness does not have.
pub fn exclude(doc: &mut Fields) {
    // GeoIP: `client.geo.*` comes from ES's GeoIP processor and its
    // downloaded MaxMind database; we have neither (§17, §18.2, §19.11).
    doc.retain(|k, _| !k.starts_with("client.geo."));
    // User agent: ES parses `user_agent.original` with the uap-core regex
    // database. `emulate::parse_user_agent` reproduces only the families in
    // the corpus; for any other string the parsed fields are excluded.
    let emulated = doc
        .get("user_agent.original")
        .and_then(|v| v.first())
        .and_then(Value::as_str)
        .is_none_or(ua_is_emulated);
    if !emulated {
        doc.retain(|k, _| !k.starts_with("user_agent.") || k.starts_with("user_agent.original"));
    }
}

/// Step 4: a dynamic field keeps its existence, its value becomes `"dynamic"`.
pub fn apply_dynamic(doc: &mut Fields, dynamic: &[&str]) {
    for k in DEFAULT_DYNAMIC.iter().chain(dynamic) {
        if let Some(v) = doc.get_mut(*k) {
            *v = vec![Value::from("dynamic")];
        }
    }
}

fn first_str<'a>(d: &'a Fields, k: &str) -> Option<&'a str> {
    d.get(k).and_then(|v| v.first()).and_then(Value::as_str)
}

/// undefined(0) < error(1) < log(2) < metric(3) < span(4) < transaction(5).
fn event_class(d: &Fields) -> u8 {
    match first_str(d, "data_stream.type") {
        Some("logs") if first_str(d, "data_stream.dataset") == Some("apm.error") => 1,
        Some("logs") => 2,
        Some("metrics") => 3,
        Some("traces") if d.contains_key("span.type") => 4,
        Some("traces") if d.contains_key("transaction.type") => 5,
        _ => 0,
    }
}

const SORT_FIELDS: &[&str] = &[
    "trace.id",
    "transaction.id",
    "span.id",
    "error.id",
    "transaction.name",
    "span.destination.service.resource",
    "transaction.type",
    "span.type",
    "service.name",
    "service.environment",
    "message",
    "metricset.interval",
    "@timestamp",
];

fn cmp_value(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Step 5: the approval sort order.
pub fn cmp_docs(a: &Fields, b: &Fields) -> Ordering {
    event_class(a).cmp(&event_class(b)).then_with(|| {
        for k in SORT_FIELDS {
            let o = match (
                a.get(*k).and_then(|v| v.first()),
                b.get(*k).and_then(|v| v.first()),
            ) {
                (Some(x), Some(y)) => cmp_value(x, y),
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        let ja = serde_json::to_string(a).unwrap_or_default();
        let jb = serde_json::to_string(b).unwrap_or_default();
        ja.cmp(&jb)
    })
}

/// Deep equality with numbers compared as float64 (as upstream decodes the
/// JSON) and a 1e-9 relative tolerance for the last-bit differences ES's
/// float/double round trips produce (e.g. 608.9300000000001 → 608.93).
pub fn values_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => false,
        },
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

fn short(v: &[Value]) -> String {
    let s = if v.len() == 1 {
        v[0].to_string()
    } else {
        Value::Array(v.to_vec()).to_string()
    };
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary_compat(200)])
    } else {
        s
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        while i > 0 && !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Differences of one document pair: `(missing, extra, differing)` lines.
fn doc_diff(ours: &Fields, approved: &Fields) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in approved {
        match ours.get(k) {
            None => out.push(format!("missing {k} = {}", short(v))),
            Some(o) if !values_eq(&Value::Array(o.clone()), &Value::Array(v.clone())) => out.push(
                format!("differs {k}: expected {} got {}", short(v), short(o)),
            ),
            Some(_) => {}
        }
    }
    for (k, v) in ours {
        if !approved.contains_key(k) {
            out.push(format!("extra   {k} = {}", short(v)));
        }
    }
    out
}

fn label(d: &Fields) -> String {
    let ids: Vec<String> = [
        "processor.event",
        "trace.id",
        "transaction.id",
        "span.id",
        "error.id",
        "metricset.name",
        "message",
    ]
    .iter()
    .filter_map(|k| first_str(d, k).map(|v| format!("{k}={v}")))
    .collect();
    ids.join(" ")
}

/// Step 6: compares sorted documents with the approved ones and returns a
/// readable diff (empty when they are equal). Both inputs must already have
/// exclusions and dynamic fields applied.
pub fn compare(mut ours: Vec<Fields>, mut approved: Vec<Fields>) -> Vec<String> {
    ours.sort_by(cmp_docs);
    approved.sort_by(cmp_docs);
    let mut out = Vec::new();
    if ours.len() != approved.len() {
        out.push(format!(
            "document count: expected {} got {}",
            approved.len(),
            ours.len()
        ));
    }
    // Pair by sort position; when a pair differs, prefer the unpaired
    // document of ours that differs least (the sort is a harness artefact:
    // ties and dynamic values can order equal documents differently).
    let mut used = vec![false; ours.len()];
    for (i, ap) in approved.iter().enumerate() {
        let mut best: Option<(usize, Vec<String>)> = None;
        let order = (i..ours.len()).chain(0..i.min(ours.len()));
        for j in order {
            if used[j] {
                continue;
            }
            let d = doc_diff(&ours[j], ap);
            let better = best.as_ref().is_none_or(|(_, b)| d.len() < b.len());
            if better {
                let done = d.is_empty();
                best = Some((j, d));
                if done {
                    break;
                }
            }
        }
        match best {
            None => out.push(format!("doc {i} [{}]: no document of ours left", label(ap))),
            Some((j, d)) => {
                used[j] = true;
                if !d.is_empty() {
                    out.push(format!("doc {i} [{}]:", label(ap)));
                    out.extend(d.into_iter().map(|l| format!("    {l}")));
                }
            }
        }
    }
    for (j, o) in ours.iter().enumerate() {
        if !used[j] {
            out.push(format!("unexpected document of ours [{}]", label(o)));
        }
    }
    out
}
