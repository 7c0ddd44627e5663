//! Emulation of what Elasticsearch does to an apm-server document between
//! the bulk request and a `fields: ["*"]` search:
//! the apm-data ingest pipelines, constant keywords, the
//! `error.grouping_name` runtime field, non-indexed objects, flattened
//! headers, `.text` multi-fields, `ip` canonical form, scaled floats,
//! `ignore_above: 1024`, date formatting and the user-agent processor for
//! the user-agent families that occur in the corpus.
//!
//! What cannot be emulated (GeoIP lookups, the full uap-core regex
//! database) is *not* produced here; `compare.rs` excludes exactly those
//! fields from both sides and says why.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A document in ES `fields` form: dotted leaf name → array of values.
pub type Fields = BTreeMap<String, Vec<Value>>;

/// Objects mapped with `enabled: false` / dynamic indexing off: present in
/// `_source`, never in `fields` (§17 "Not indexed").
pub const NOT_INDEXED: &[&str] = &[
    "span.stacktrace",
    "error.exception.stacktrace",
    "error.log.stacktrace",
    "transaction.custom",
    "error.custom",
    "error.exception.attributes",
    "http.request.cookies",
    "http.request.body",
];

/// `flattened` fields: `fields` returns the whole object as one value, with
/// single-element arrays collapsed to plain values (§17 "Flattened").
const FLATTENED: &[&str] = &["http.request.headers", "http.response.headers"];

/// Fields of the aggregated metrics mapped as `histogram` or
/// `aggregate_metric_double`: `fields` returns each as one object.
const METRIC_OBJECTS: &[&str] = &[
    "transaction.duration.histogram",
    "transaction.duration.summary",
    "event.success_count",
];

/// `ignore_above` of the dynamic keyword template (§17 "Unmapped strings").
const IGNORE_ABOVE: usize = 1024;

/// Applies the ES-side steps to one `_source` document and returns its
/// `fields` view. `index` is the data stream the document was written to.
pub fn fields_view(index: &str, source: &Value) -> Result<Fields, String> {
    let Value::Object(src) = source else {
        return Err(format!("document in {index} is not a JSON object"));
    };
    let mut doc = src.clone();
    let (ds_type, ds_dataset) = data_stream(index, &doc);

    // ---- ingest pipelines (apm@pipeline + per data-stream final pipelines)
    let mut extra = Fields::new();
    match ds_type.as_str() {
        "traces" => traces_pipeline(&mut doc, &mut extra),
        "logs" => {
            if get(&doc, "event.dataset").is_none() {
                extra.insert(
                    "event.dataset".into(),
                    vec![Value::from(ds_dataset.clone())],
                );
            }
            if ds_dataset == "apm.error" {
                // constant_keyword of logs-apm.error-*
                extra.insert("processor.event".into(), vec![Value::from("error")]);
                if let Some(n) = grouping_name(&doc) {
                    // runtime field error.grouping_name
                    extra.insert("error.grouping_name".into(), vec![Value::from(n)]);
                }
            }
        }
        "metrics" => {
            // constant_keyword of metrics-apm.*
            extra.insert("processor.event".into(), vec![Value::from("metric")]);
            metric_samples(&mut doc, &mut extra)?;
        }
        _ => {}
    }
    // data_stream.* are constant keywords: present even if _source lacks them.
    for (k, v) in [
        ("data_stream.type", ds_type.clone()),
        ("data_stream.dataset", ds_dataset.clone()),
    ] {
        if get(&doc, k).is_none() && !v.is_empty() {
            extra.insert(k.into(), vec![Value::from(v)]);
        }
    }
    // user-agent processor (apm@pipeline)
    if let Some(ua) = get(&doc, "user_agent.original").and_then(Value::as_str) {
        for (k, v) in parse_user_agent(ua) {
            extra.insert(format!("user_agent.{k}"), vec![Value::from(v)]);
        }
    }

    // ---- mappings
    let mut out = Fields::new();
    flatten("", &Value::Object(doc), &mut out);
    for (k, v) in extra {
        out.insert(k, v);
    }
    apply_mappings(&mut out);
    // The aggregated metrics' index templates map `metricset.name` as a
    // plain keyword (no ECS `.text` multi-field, unlike `metrics-apm.app.*`).
    if [
        "transaction",
        "service_transaction",
        "service_summary",
        "service_destination",
    ]
    .iter()
    .any(|m| ds_dataset.starts_with(&format!("apm.{m}.")))
    {
        out.remove("metricset.name.text");
    }
    Ok(out)
}

/// `data_stream.{type,dataset}` from the document, else from the index name
/// (`<type>-<dataset>-<namespace>`).
fn data_stream(index: &str, doc: &Map<String, Value>) -> (String, String) {
    let from_doc = |k: &str| get(doc, k).and_then(Value::as_str).map(str::to_owned);
    let mut parts = index.splitn(2, '-');
    let ty = parts.next().unwrap_or("").to_owned();
    let rest = parts.next().unwrap_or("");
    let dataset = rest
        .rsplit_once('-')
        .map(|(d, _)| d)
        .unwrap_or(rest)
        .to_owned();
    (
        from_doc("data_stream.type").unwrap_or(ty),
        from_doc("data_stream.dataset").unwrap_or(dataset),
    )
}

/// Dotted-path lookup in a JSON object (keys may themselves contain dots,
/// as the encoder writes `"sum.us"`; both spellings are tried).
pub fn get<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(path) {
        return Some(v);
    }
    let mut split = path.match_indices('.').map(|(i, _)| i);
    split.find_map(|i| {
        let (head, tail) = (&path[..i], &path[i + 1..]);
        doc.get(head)
            .and_then(Value::as_object)
            .and_then(|o| get(o, tail))
    })
}

fn remove(doc: &mut Map<String, Value>, path: &str) -> Option<Value> {
    if let Some(v) = doc.remove(path) {
        return Some(v);
    }
    let (head, tail) = path.split_once('.')?;
    doc.get_mut(head)
        .and_then(Value::as_object_mut)
        .and_then(|o| remove(o, tail))
}

/// traces-apm* final pipeline: `processor.event`, `<event>.duration.us`,
/// `event.success_count`; `event.duration` removed.
fn traces_pipeline(doc: &mut Map<String, Value>, extra: &mut Fields) {
    let pe = if get(doc, "transaction.type").is_some() {
        "transaction"
    } else {
        "span"
    };
    extra.insert("processor.event".into(), vec![Value::from(pe)]);
    let dur = remove(doc, "event.duration");
    let key = format!("{pe}.duration.us");
    if get(doc, &key).is_none() {
        let ns = dur.as_ref().and_then(Value::as_f64).unwrap_or(0.0);
        // "value / 1000" assigned to a long field: truncation.
        extra.insert(key, vec![Value::from((ns / 1000.0).trunc() as i64)]);
    }
    match get(doc, "event.outcome").and_then(Value::as_str) {
        Some("failure") => {
            extra.insert("event.success_count".into(), vec![Value::from(0)]);
        }
        Some("success") => {
            let rc = get(doc, &format!("{pe}.representative_count")).cloned();
            extra.insert(
                "event.success_count".into(),
                vec![rc.unwrap_or_else(|| Value::from(1))],
            );
        }
        _ => {}
    }
}

/// Runtime field of logs-apm.error: `error.log.message` if non-empty, else
/// `error.exception[0].message` if non-empty.
fn grouping_name(doc: &Map<String, Value>) -> Option<String> {
    let non_empty = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    non_empty(get(doc, "error.log.message")).or_else(|| {
        let first = match get(doc, "error.exception") {
            Some(Value::Array(a)) => a.first(),
            Some(v @ Value::Object(_)) => Some(v),
            _ => None,
        };
        non_empty(first.and_then(|x| x.get("message")))
    })
}

/// metrics-apm.* pipeline: every `metricset.samples[]` entry becomes a
/// top-level field; histograms `{values,counts}`, summaries
/// `{value_count,sum}`, otherwise the plain `value`.
fn metric_samples(doc: &mut Map<String, Value>, extra: &mut Fields) -> Result<(), String> {
    let Some(samples) = remove(doc, "metricset.samples") else {
        return Ok(());
    };
    let Value::Array(samples) = samples else {
        return Err(format!("metricset.samples is not an array: {samples}"));
    };
    for s in samples {
        let name = s
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("metric sample without name: {s}"))?
            .to_owned();
        let v = if let (Some(values), Some(counts)) = (s.get("values"), s.get("counts")) {
            serde_json::json!({"counts": counts, "values": values})
        } else if let (Some(c), Some(sum)) = (s.get("value_count"), s.get("sum")) {
            serde_json::json!({"value_count": c, "sum": sum})
        } else {
            s.get("value").cloned().unwrap_or(Value::Null)
        };
        extra.insert(name, vec![v]);
    }
    Ok(())
}

/// A `flattened` field's one value: the whole object, one-element arrays
/// collapsed to their element.
pub fn flattened_value(o: &Map<String, Value>) -> Map<String, Value> {
    o.iter()
        .map(|(k, x)| match x {
            Value::Array(a) if a.len() == 1 => (k.clone(), a[0].clone()),
            other => (k.clone(), other.clone()),
        })
        .collect()
}

/// Objects → dotted keys, arrays of objects → multi-valued leaves, nulls and
/// empty objects → nothing; flattened fields kept whole; non-indexed dropped.
fn flatten(prefix: &str, v: &Value, out: &mut Fields) {
    // `_doc_count` is a metadata field: never in `fields`.
    if NOT_INDEXED.contains(&prefix) || prefix == "_doc_count" {
        return;
    }
    if METRIC_OBJECTS.contains(&prefix) && v.is_object() {
        out.entry(prefix.to_owned()).or_default().push(v.clone());
        return;
    }
    if FLATTENED.contains(&prefix) {
        if let Value::Object(o) = v {
            let m = flattened_value(o);
            if !m.is_empty() {
                out.entry(prefix.to_owned())
                    .or_default()
                    .push(Value::Object(m));
            }
        }
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
        Value::Array(a) => a.iter().for_each(|e| flatten(prefix, e, out)),
        Value::Null => {}
        leaf => out.entry(prefix.to_owned()).or_default().push(leaf.clone()),
    }
}

/// Does `ecs@mappings` give this string field a `.text` multi-field?
pub fn has_text_multifield(k: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".name",
        ".title",
        ".executable",
        ".working_directory",
        ".full_name",
        "file.path",
        "file.target_path",
        "os.full",
        "url.full",
        "url.original",
        "error.stack_trace",
    ];
    k == "user_agent.original" || SUFFIXES.iter().any(|s| k.ends_with(s))
}

/// match_only_text / wildcard fields: no keyword `ignore_above` applies.
fn is_text_or_wildcard(k: &str) -> bool {
    k == "message"
        || k.ends_with(".message")
        || k.ends_with("url.full")
        || k.ends_with("url.original")
        || k.ends_with("url.path")
        || k.ends_with(".stack_trace")
}

/// Mapping effects on the flat view: `ip` canonical form, scaled floats,
/// dates, `ignore_above`, `.text` copies.
fn apply_mappings(out: &mut Fields) {
    let mut text = Vec::new();
    for (k, vals) in out.iter_mut() {
        if k.ends_with(".ip") || k.ends_with("_ip") {
            for v in vals.iter_mut() {
                if let Some(ip) = v.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                    *v = Value::from(ip.to_string());
                }
            }
        }
        if let Some(factor) = scaled_float_factor(k) {
            for v in vals.iter_mut() {
                if let Some(f) = v.as_f64() {
                    *v = number((f * factor).round() / factor);
                }
            }
        }
        if k == "@timestamp" {
            for v in vals.iter_mut() {
                if let Some(s) = v.as_str().and_then(es_date_millis) {
                    *v = Value::from(s);
                }
            }
        }
        let strings: Vec<Value> = vals.iter().filter(|v| v.is_string()).cloned().collect();
        if !strings.is_empty() && has_text_multifield(k) {
            text.push((format!("{k}.text"), strings));
        }
        if !is_text_or_wildcard(k) {
            vals.retain(|v| v.as_str().is_none_or(|s| s.chars().count() <= IGNORE_ABOVE));
        }
    }
    out.retain(|_, v| !v.is_empty());
    out.extend(text);
}

fn scaled_float_factor(k: &str) -> Option<f64> {
    if k.starts_with("numeric_labels.") {
        Some(1e6)
    } else if k == "transaction.representative_count" || k == "span.representative_count" {
        Some(1e3)
    } else {
        None
    }
}

/// Integral floats come back from ES as integers; keep JSON numbers tidy.
fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// A `date` field holds milliseconds; `fields` formats it back as
/// `yyyy-MM-ddTHH:mm:ss.SSSZ` (UTC).
fn es_date_millis(s: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let t = t.to_offset(time::UtcOffset::UTC);
    let ms = t.millisecond();
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms
    ))
}

/// The ES `user_agent` processor, limited to the families that occur in the
/// corpus (Chrome on macOS, Go's HTTP client, unknown strings). Returns
/// `(field under user_agent., value)` pairs. Anything else would need the
/// uap-core regex database; `compare.rs` excludes the parsed fields for
/// user agents this function does not recognise (see [`ua_is_emulated`]).
pub fn parse_user_agent(ua: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let chrome = regex::Regex::new(r"Chrome/(\d+\.\d+\.\d+\.\d+)").ok();
    let go = regex::Regex::new(r"^Go-http-client/(\d+\.\d+)").ok();
    let mac = regex::Regex::new(r"Mac OS X (\d+)[_.](\d+)(?:[_.](\d+))?").ok();
    if let Some(c) = chrome.as_ref().and_then(|r| r.captures(ua)) {
        out.push(("name", "Chrome".to_owned()));
        out.push(("version", c[1].to_owned()));
    } else if let Some(c) = go.as_ref().and_then(|r| r.captures(ua)) {
        out.push(("name", "Go-http-client".to_owned()));
        out.push(("version", c[1].to_owned()));
    } else {
        out.push(("name", "Other".to_owned()));
    }
    if let Some(c) = mac.as_ref().and_then(|r| r.captures(ua)) {
        let version = [c.get(1), c.get(2), c.get(3)]
            .iter()
            .flatten()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(".");
        out.push(("os.name", "Mac OS X".to_owned()));
        out.push(("os.full", format!("Mac OS X {version}")));
        out.push(("os.version", version));
        out.push(("device.name", "Mac".to_owned()));
    } else {
        out.push(("device.name", "Other".to_owned()));
    }
    out
}

/// Whether [`parse_user_agent`] reproduces ES for this user agent string:
/// only the families seen in the corpus approvals.
pub fn ua_is_emulated(ua: &str) -> bool {
    ua.starts_with("Go-http-client/")
        || ua == "Mozilla Chrome Edge"
        || ua.contains("Chrome/51.0.2704.103")
}
