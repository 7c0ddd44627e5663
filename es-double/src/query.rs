//! JSON helpers that imitate Elasticsearch just enough for tests: response
//! `filter_path`, `_source` include filtering and a small query evaluator
//! (`match_all`, `term`, `terms`, `match`, `ids`, `exists`, `bool`).
//!
//! Invariants: every function is total (no panics on odd input); unknown
//! query clauses match everything, so a test relying on one sees extra hits
//! rather than a silent miss.

use serde_json::{Map, Value};

/// Splits a comma-separated list of dotted patterns into segment lists.
pub fn parse_patterns(list: &str) -> Vec<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').map(str::to_string).collect())
        .collect()
}

fn seg_matches(pat: &str, key: &str) -> bool {
    if pat == "*" || pat == "**" {
        return true;
    }
    match pat.split_once('*') {
        None => pat == key,
        Some((pre, post)) => {
            key.len() >= pre.len() + post.len() && key.starts_with(pre) && key.ends_with(post)
        }
    }
}

/// Keeps the parts of `v` named by `pats` (ES `filter_path` semantics,
/// roughly: arrays are transparent, `*` matches one key, a pattern ending on
/// a key keeps that key's whole value). `None` when nothing matched.
pub fn filter(v: &Value, pats: &[Vec<String>]) -> Option<Value> {
    if pats.iter().any(|p| p.is_empty()) {
        return Some(v.clone());
    }
    match v {
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(|i| filter(i, pats)).collect();
            if kept.is_empty() {
                None
            } else {
                Some(Value::Array(kept))
            }
        }
        Value::Object(obj) => {
            let mut out = Map::new();
            for (k, child) in obj {
                let sub: Vec<Vec<String>> = pats
                    .iter()
                    .filter(|p| seg_matches(&p[0], k))
                    .map(|p| {
                        // A trailing `*` keeps the whole subtree (source filtering).
                        if p.len() == 1 || (p.len() == 2 && p[1] == "**") {
                            Vec::new()
                        } else {
                            p[1..].to_vec()
                        }
                    })
                    .collect();
                if sub.is_empty() {
                    continue;
                }
                if let Some(f) = filter(child, &sub) {
                    out.insert(k.clone(), f);
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(Value::Object(out))
            }
        }
        _ => None,
    }
}

/// Applies `filter_path` to a response body; `{}` when nothing matched.
pub fn filter_response(v: Value, filter_path: Option<&str>) -> Value {
    match filter_path {
        None => v,
        Some(fp) => {
            let pats = parse_patterns(fp);
            if pats.is_empty() {
                return v;
            }
            filter(&v, &pats).unwrap_or_else(|| Value::Object(Map::new()))
        }
    }
}

/// `_source` filtering: `true`/absent keeps all, `false` drops, a string or
/// list of patterns (or `{"includes": [...]}`) keeps the matching fields.
pub fn filter_source(src: &Value, spec: Option<&Value>) -> Option<Value> {
    let pats: Vec<Vec<String>> = match spec {
        None | Some(Value::Bool(true)) | Some(Value::Null) => return Some(src.clone()),
        Some(Value::Bool(false)) => return None,
        Some(Value::String(s)) => parse_patterns(s),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .flat_map(parse_patterns)
            .collect(),
        Some(Value::Object(o)) => match o.get("includes").or_else(|| o.get("include")) {
            Some(inc) => return filter_source(src, Some(inc)),
            None => return Some(src.clone()),
        },
        Some(_) => return Some(src.clone()),
    };
    if pats.is_empty() {
        return Some(src.clone());
    }
    Some(filter(src, &pats).unwrap_or_else(|| Value::Object(Map::new())))
}

/// The value at a dotted path, nested objects or literal dotted keys.
pub fn get_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(path) {
        return Some(v);
    }
    path.match_indices('.').find_map(|(i, _)| {
        let child = doc.get(&path[..i])?;
        get_path(child, &path[i + 1..])
    })
}

fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), other) | (other, Value::String(x)) => x == &other.to_string(),
        _ => a == b,
    }
}

fn field_has(doc: &Value, id: &str, field: &str, want: &Value) -> bool {
    if field == "_id" {
        return want.as_str() == Some(id);
    }
    match get_path(doc, field) {
        Some(Value::Array(vs)) => vs.iter().any(|v| scalar_eq(v, want)),
        Some(v) => scalar_eq(v, want),
        None => false,
    }
}

/// The single `{field: value}` of a term-like clause, unwrapping `{"value"|"query": v}`.
fn field_value(clause: &Value) -> Option<(&str, &Value)> {
    let (field, v) = clause.as_object()?.iter().next()?;
    let v = match v {
        Value::Object(o) => o.get("value").or_else(|| o.get("query")).unwrap_or(v),
        _ => v,
    };
    Some((field.as_str(), v))
}

fn clauses(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
    }
}

/// Whether document `doc` (with id `id`) matches query `q`.
pub fn matches(q: &Value, doc: &Value, id: &str) -> bool {
    let Some(obj) = q.as_object() else {
        return true;
    };
    obj.iter().all(|(kind, body)| match kind.as_str() {
        "match_all" => true,
        "match_none" => false,
        "term" | "match" | "match_phrase" => match field_value(body) {
            Some((f, v)) => field_has(doc, id, f, v),
            None => true,
        },
        "terms" => match body.as_object().and_then(|o| o.iter().next()) {
            Some((f, Value::Array(vs))) => vs.iter().any(|v| field_has(doc, id, f, v)),
            _ => true,
        },
        "ids" => match body.get("values") {
            Some(Value::Array(vs)) => vs.iter().any(|v| v.as_str() == Some(id)),
            _ => true,
        },
        "exists" => match body.get("field").and_then(Value::as_str) {
            Some(f) => get_path(doc, f).is_some_and(|v| !v.is_null()),
            None => true,
        },
        "bool" => {
            let must = clauses(body.get("must"))
                .into_iter()
                .chain(clauses(body.get("filter")))
                .all(|c| matches(c, doc, id));
            let not = clauses(body.get("must_not"))
                .into_iter()
                .any(|c| matches(c, doc, id));
            let should = clauses(body.get("should"));
            let should_ok = should.is_empty() || should.iter().any(|c| matches(c, doc, id));
            must && !not && should_ok
        }
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filter_path_bulk() {
        let v = json!({"took": 3, "errors": true, "items": [
            {"create": {"_index": "a", "_id": "1", "status": 201, "result": "created"}},
            {"create": {"_index": "a", "status": 429, "error": {"type": "x", "reason": "y", "caused_by": {}}}}
        ]});
        let f = filter_response(
            v,
            Some("items.*._index,items.*.status,items.*.error.type,items.*.error.reason"),
        );
        assert_eq!(
            f,
            json!({"items": [
                {"create": {"_index": "a", "status": 201}},
                {"create": {"_index": "a", "status": 429, "error": {"type": "x", "reason": "y"}}}
            ]})
        );
    }

    #[test]
    fn source_filter_and_query() {
        let d = json!({"service": {"name": "s", "version": "1"}, "file": {"path": "p"}, "content": "c"});
        let f = filter_source(&d, Some(&json!("service.*,file.path"))).unwrap();
        assert_eq!(
            f,
            json!({"service": {"name": "s", "version": "1"}, "file": {"path": "p"}})
        );
        assert!(matches(
            &json!({"bool": {"filter": [{"term": {"service.name": "s"}}, {"term": {"file.path": {"value": "p"}}}]}}),
            &d,
            "id"
        ));
        assert!(!matches(&json!({"term": {"service.name": "t"}}), &d, "id"));
        assert!(matches(&json!({"ids": {"values": ["id"]}}), &d, "id"));
        let flat = json!({"service.name": "s"});
        assert!(matches(&json!({"term": {"service.name": "s"}}), &flat, "x"));
    }
}
