//! What apm-data installs in Elasticsearch, reduced to what our documents
//! need and expressed in what OpenSearch 2.19 has: one index template per
//! data stream family (`traces-apm*`, `logs-apm*`, `metrics-apm*`, each a
//! data stream) and one final ingest pipeline each. The same rules as
//! `tests/conformance/emulate.rs`, but carried out by the engine: its
//! mappers, its painless scripts, its `user_agent` processor, its `fields`
//! retrieval.
//!
//! Where OpenSearch lacks an Elasticsearch feature the nearest equivalent
//! is used and named here (and in docs/elasticsearch.md):
//! * `constant_keyword` with a template value (`processor.event`,
//!   `data_stream.*`): set by the ingest pipeline instead, which gives the
//!   same `fields` view.
//! * the runtime field `error.grouping_name`: computed by the pipeline.
//! * `flattened` (`http.*.headers`): OpenSearch's `flat_object` is returned
//!   by `fields` as a Java `toString`, so the headers are mapped
//!   `enabled: false` and read from `_source` (see `engine::fields_of`).
//! * `histogram` / `aggregate_metric_double` metric samples: no such types;
//!   their `{counts, values}` / `{value_count, sum}` objects are read back as
//!   one value from `_source` (see `engine::fields_of`).
//! * `match_only_text` and `wildcard` exist in OpenSearch and are used.

use serde_json::{json, Value};

/// Objects apm-data maps `enabled: false` (never in `fields`): the same list
/// the double's emulation uses.
use crate::emulate::NOT_INDEXED;

/// `flattened` in apm-data; see the module doc.
pub const FLATTENED: &[&str] = &["http.request.headers", "http.response.headers"];

/// The families, their template names and final pipelines.
pub const FAMILIES: &[(&str, &str)] = &[
    ("traces", "traces-apm*"),
    ("logs", "logs-apm*"),
    ("metrics", "metrics-apm*"),
];

pub fn pipeline_name(family: &str) -> String {
    format!("{family}-apm@engine-final-pipeline")
}

/// `properties` for dotted paths (`a.b.c` → nested objects).
fn set_path(props: &mut serde_json::Map<String, Value>, path: &str, mapping: Value) {
    match path.split_once('.') {
        None => {
            props.insert(path.to_owned(), mapping);
        }
        Some((head, tail)) => {
            let obj = props
                .entry(head.to_owned())
                .or_insert_with(|| json!({"properties": {}}));
            if let Some(Value::Object(p)) = obj.get_mut("properties") {
                set_path(p, tail, mapping);
            }
        }
    }
}

/// The index template of one family.
pub fn index_template(family: &str, pattern: &str) -> Value {
    let mut props = serde_json::Map::new();
    set_path(&mut props, "@timestamp", json!({"type": "date"}));
    for p in NOT_INDEXED.iter().chain(FLATTENED) {
        set_path(&mut props, p, json!({"type": "object", "enabled": false}));
    }
    for p in [
        "transaction.representative_count",
        "span.representative_count",
    ] {
        set_path(
            &mut props,
            p,
            json!({"type": "scaled_float", "scaling_factor": 1000}),
        );
    }
    let text = json!({"type": "match_only_text"});
    let keyword_with_text = json!({
        "type": "keyword", "ignore_above": 1024,
        "fields": {"text": {"type": "match_only_text"}}
    });
    let wildcard = json!({"type": "wildcard"});
    let wildcard_with_text = json!({
        "type": "wildcard",
        "fields": {"text": {"type": "match_only_text"}}
    });
    // One dynamic template per path: OpenSearch 2.19 has no list form of
    // `path_match` (Elasticsearch 8.9+).
    let mut dynamic_templates = vec![
        json!({"numeric_labels": {"path_match": "numeric_labels.*",
            "mapping": {"type": "scaled_float", "scaling_factor": 1_000_000}}}),
        json!({"ip": {"match_mapping_type": "string", "match_pattern": "regex", "match": "^(.*_)?ip$",
            "mapping": {"type": "ip", "ignore_malformed": true}}}),
        json!({"message": {"match_mapping_type": "string", "match": "message", "mapping": text}}),
    ];
    let per_path = [
        ("url.full", &wildcard_with_text),
        ("url.original", &wildcard_with_text),
        ("url.path", &wildcard),
        ("stack_trace", &wildcard),
        ("file.path", &keyword_with_text),
        ("file.target_path", &keyword_with_text),
        ("os.full", &keyword_with_text),
    ];
    for (i, (suffix, mapping)) in per_path.iter().enumerate() {
        for (j, pattern) in [format!("*.{suffix}"), (*suffix).to_owned()]
            .iter()
            .enumerate()
        {
            dynamic_templates.push(json!({format!("path_{i}_{j}"): {
                "match_mapping_type": "string", "path_match": pattern, "mapping": mapping}}));
        }
    }
    dynamic_templates.extend([
        json!({"user_agent_original": {"match_mapping_type": "string",
            "path_match": "user_agent.original", "mapping": keyword_with_text}}),
        json!({"text_multifield": {"match_mapping_type": "string", "match_pattern": "regex",
            "match": "^(name|title|executable|working_directory|full_name)$",
            "mapping": keyword_with_text}}),
        json!({"strings": {"match_mapping_type": "string",
            "mapping": {"type": "keyword", "ignore_above": 1024}}}),
        json!({"doubles": {"match_mapping_type": "double", "mapping": {"type": "double"}}}),
    ]);
    json!({
        "index_patterns": [pattern],
        "data_stream": {},
        "priority": 250,
        "template": {
            "settings": {
                "number_of_shards": 1,
                "number_of_replicas": 0,
                "final_pipeline": pipeline_name(family),
                "mapping.total_fields.limit": 5000
            },
            "mappings": {
                "date_detection": false,
                "numeric_detection": false,
                "dynamic_templates": dynamic_templates,
                "properties": props
            }
        }
    })
}

/// Painless helpers: dotted-path lookup that also finds literal dotted keys
/// (the encoder writes e.g. `"sum.us"`), removal and nested assignment.
const HELPERS: &str = r#"
Object lookup(Map m, String p) {
  if (m.containsKey(p)) { return m.get(p); }
  int i = p.indexOf('.');
  while (i > 0) {
    Object h = m.get(p.substring(0, i));
    if (h instanceof Map) {
      Object r = lookup((Map) h, p.substring(i + 1));
      if (r != null) { return r; }
    }
    i = p.indexOf('.', i + 1);
  }
  return null;
}
Object take(Map m, String p) {
  if (m.containsKey(p)) { return m.remove(p); }
  int i = p.indexOf('.');
  if (i < 0) { return null; }
  Object h = m.get(p.substring(0, i));
  if (h instanceof Map) { return take((Map) h, p.substring(i + 1)); }
  return null;
}
void put(Map m, String p, Object v) {
  int i = p.indexOf('.');
  if (i < 0) { m.put(p, v); return; }
  String head = p.substring(0, i);
  Object h = m.get(head);
  if (!(h instanceof Map)) { h = new HashMap(); m.put(head, h); }
  put((Map) h, p.substring(i + 1), v);
}
String nonEmpty(Object o) {
  if (o instanceof String && !((String) o).isEmpty()) { return (String) o; }
  return null;
}
"#;

/// data_stream.type/dataset from the data stream name where the document
/// lacks them (constant keywords in apm-data).
const DATA_STREAM: &str = r#"
String idx = ctx['_index'];
int a = idx.indexOf('-');
int b = idx.lastIndexOf('-');
String ty = a > 0 ? idx.substring(0, a) : idx;
String ds = b > a ? idx.substring(a + 1, b) : idx.substring(a + 1);
if (lookup(ctx, 'data_stream.type') == null) { put(ctx, 'data_stream.type', ty); }
if (lookup(ctx, 'data_stream.dataset') == null) { put(ctx, 'data_stream.dataset', ds); }
String dataset = (String) lookup(ctx, 'data_stream.dataset');
"#;

const TRACES: &str = r#"
String pe = lookup(ctx, 'transaction.type') != null ? 'transaction' : 'span';
put(ctx, 'processor.event', pe);
Object dur = take(ctx, 'event.duration');
String key = pe + '.duration.us';
if (lookup(ctx, key) == null) {
  double ns = dur instanceof Number ? ((Number) dur).doubleValue() : 0;
  put(ctx, key, (long) (ns / 1000.0));
}
Object outcome = lookup(ctx, 'event.outcome');
if (outcome == 'failure') {
  put(ctx, 'event.success_count', 0);
} else if (outcome == 'success') {
  Object rc = lookup(ctx, pe + '.representative_count');
  put(ctx, 'event.success_count', rc != null ? rc : 1);
}
"#;

const LOGS: &str = r#"
if (lookup(ctx, 'event.dataset') == null) { put(ctx, 'event.dataset', dataset); }
if (dataset == 'apm.error') {
  put(ctx, 'processor.event', 'error');
  String n = nonEmpty(lookup(ctx, 'error.log.message'));
  if (n == null) {
    Object ex = lookup(ctx, 'error.exception');
    Object first = ex instanceof List ? (((List) ex).isEmpty() ? null : ((List) ex).get(0)) : ex;
    if (first instanceof Map) { n = nonEmpty(((Map) first).get('message')); }
  }
  if (n != null) { put(ctx, 'error.grouping_name', n); }
}
"#;

const METRICS: &str = r#"
put(ctx, 'processor.event', 'metric');
Object samples = take(ctx, 'metricset.samples');
if (samples instanceof List) {
  for (Object o : (List) samples) {
    if (!(o instanceof Map)) { continue; }
    Map s = (Map) o;
    Object name = s.get('name');
    if (!(name instanceof String)) { continue; }
    Object v;
    if (s.containsKey('values') && s.containsKey('counts')) {
      v = ['counts': s.get('counts'), 'values': s.get('values')];
    } else if (s.containsKey('value_count') && s.containsKey('sum')) {
      v = ['value_count': s.get('value_count'), 'sum': s.get('sum')];
    } else {
      v = s.get('value');
    }
    put(ctx, (String) name, v);
  }
}
"#;

/// The final pipeline of one family.
pub fn pipeline(family: &str) -> Value {
    let body = match family {
        "traces" => TRACES,
        "logs" => LOGS,
        _ => METRICS,
    };
    json!({
        "description": format!("apm-rs test engine: what apm-data's {family} pipelines do"),
        "processors": [
            {"script": {"lang": "painless", "source": format!("{HELPERS}\n{DATA_STREAM}\n{body}")}},
            {"user_agent": {"field": "user_agent.original", "target_field": "user_agent",
                "ignore_missing": true}}
        ]
    })
}
