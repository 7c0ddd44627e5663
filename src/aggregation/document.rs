//! Aggregated metrics as Elasticsearch documents, in apm-server 9.x's
//! shape: one bulk `create` action into
//! `metrics-apm.<metricset>.<interval>-<namespace>` and a source with
//! `metricset.{name,interval}`, the group's dimensions, its metrics and
//! `_doc_count` (the number of events the document stands for, so that
//! Elasticsearch aggregations count events, not documents).
//!
//! Invariants: empty dimensions are left out; counts are written as
//! integers; the histogram's `values` are ascending with one positive
//! `count` each.

use super::{
    DestinationKey, DestinationMetrics, Overflow, OverflowService, ServiceGroup, ServiceKey,
    TransactionKey, TransactionMetrics, Window, OVERFLOW,
};
use crate::model::EncodeContext;
use serde_json::{Map, Value};

/// A JSON number, integral when it can be (Elasticsearch counts are integers).
fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

/// Sets the dotted `path` in `doc`, creating objects on the way.
fn put(doc: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            doc.insert(path.to_owned(), v);
        }
        Some((head, tail)) => {
            let child = doc
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                put(m, tail, v);
            }
        }
    }
}

fn put_str(doc: &mut Map<String, Value>, path: &str, s: &str) {
    if !s.is_empty() {
        put(doc, path, Value::from(s));
    }
}

fn timestamp(ns: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Writes documents to a bulk buffer, one `Vec<u8>` per document.
pub struct Writer<'a> {
    ctx: &'a EncodeContext,
    /// Each document: its bulk action line and source line.
    pub docs: Vec<Vec<u8>>,
    /// Documents written per metricset.
    pub per_metricset: Vec<(&'static str, u64)>,
}

impl<'a> Writer<'a> {
    pub fn new(ctx: &'a EncodeContext) -> Self {
        Writer {
            ctx,
            docs: Vec::new(),
            per_metricset: Vec::new(),
        }
    }

    fn base(&self, metricset: &str, interval: &str, ts_ns: i64) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("@timestamp".into(), Value::from(timestamp(ts_ns)));
        put(&mut d, "data_stream.type", Value::from("metrics"));
        put(
            &mut d,
            "data_stream.dataset",
            Value::from(format!("apm.{metricset}.{interval}")),
        );
        put(
            &mut d,
            "data_stream.namespace",
            Value::from(self.ctx.namespace.as_str()),
        );
        put_str(&mut d, "observer.hostname", &self.ctx.observer_hostname);
        put(&mut d, "observer.type", Value::from("apm-server"));
        put_str(&mut d, "observer.version", &self.ctx.observer_version);
        put(&mut d, "metricset.name", Value::from(metricset));
        put(&mut d, "metricset.interval", Value::from(interval));
        d
    }

    fn emit(&mut self, metricset: &'static str, interval: &str, doc: Map<String, Value>) {
        let index = format!("metrics-apm.{metricset}.{interval}-{}", self.ctx.namespace);
        let mut out = Vec::with_capacity(512);
        let action = serde_json::json!({"create": {"_index": index}});
        // Serialising maps of strings and numbers cannot fail.
        if serde_json::to_writer(&mut out, &action).is_ok() {
            out.push(b'\n');
            if serde_json::to_writer(&mut out, &Value::Object(doc)).is_ok() {
                out.push(b'\n');
                self.docs.push(out);
                match self.per_metricset.iter_mut().find(|(m, _)| *m == metricset) {
                    Some((_, n)) => *n += 1,
                    None => self.per_metricset.push((metricset, 1)),
                }
            }
        }
    }

    /// Every document of a harvested window.
    pub fn window(&mut self, w: &Window) {
        let iv = w.interval.name;
        for (sk, g) in &w.services {
            self.service_group(iv, &ServiceKey::unpack(sk), g);
        }
        if let Some(o) = &w.overflow {
            self.overflow_service(iv, w.start_ns, o);
        }
    }

    fn service_group(&mut self, iv: &str, sk: &ServiceKey, g: &ServiceGroup) {
        let summary = self.service_doc("service_summary", iv, sk);
        self.emit("service_summary", iv, summary);
        for (tk, m) in &g.transactions {
            let mut d = self.service_doc("transaction", iv, sk);
            transaction_dims(&mut d, &TransactionKey::unpack(tk));
            durations(&mut d, m);
            self.emit("transaction", iv, d);
        }
        if let Some(o) = &g.transaction_overflow {
            let mut d = self.service_doc("transaction", iv, sk);
            overflowed_transactions(&mut d, "transaction", o);
            self.emit("transaction", iv, d);
        }
        for (ty, m) in &g.service_transactions {
            let mut d = self.service_doc("service_transaction", iv, sk);
            put_str(&mut d, "transaction.type", ty);
            durations(&mut d, m);
            self.emit("service_transaction", iv, d);
        }
        if let Some(o) = &g.service_transaction_overflow {
            let mut d = self.service_doc("service_transaction", iv, sk);
            overflowed_transactions(&mut d, "service_transaction", o);
            self.emit("service_transaction", iv, d);
        }
        for (dk, m) in &g.destinations {
            let mut d = self.service_doc("service_destination", iv, sk);
            destination(&mut d, &DestinationKey::unpack(dk), m);
            self.emit("service_destination", iv, d);
        }
        if let Some(o) = &g.destination_overflow {
            let mut d = self.service_doc("service_destination", iv, sk);
            overflowed_destinations(&mut d, o);
            self.emit("service_destination", iv, d);
        }
    }

    fn service_doc(&self, metricset: &str, iv: &str, sk: &ServiceKey) -> Map<String, Value> {
        let mut d = self.base(metricset, iv, sk.timestamp_ns);
        put_str(&mut d, "service.name", &sk.name);
        put_str(&mut d, "service.environment", &sk.environment);
        put_str(&mut d, "service.language.name", &sk.language_name);
        put_str(&mut d, "agent.name", &sk.agent_name);
        if !sk.labels.is_empty() {
            let labels: Map<String, Value> = sk
                .labels
                .iter()
                .map(|(k, v)| (sanitize(k), Value::from(v.as_str())))
                .collect();
            d.insert("labels".into(), Value::Object(labels));
        }
        if !sk.numeric_labels.is_empty() {
            let labels: Map<String, Value> = sk
                .numeric_labels
                .iter()
                .map(|(k, v)| (sanitize(k), num(f64::from_bits(*v))))
                .collect();
            d.insert("numeric_labels".into(), Value::Object(labels));
        }
        d
    }

    fn overflow_service(&mut self, iv: &str, start_ns: i64, o: &OverflowService) {
        let base = |w: &Self, metricset: &str| {
            let mut d = w.base(metricset, iv, start_ns);
            put(&mut d, "service.name", Value::from(OVERFLOW));
            d
        };
        let mut d = base(self, "service_summary");
        put(
            &mut d,
            "service_summary.aggregation.overflow_count",
            Value::from(o.services.count()),
        );
        self.emit("service_summary", iv, d);
        if o.transactions.metrics.durations.summary().0 > 0 {
            let mut d = base(self, "transaction");
            overflowed_transactions(&mut d, "transaction", &o.transactions);
            self.emit("transaction", iv, d);
            let mut d = base(self, "service_transaction");
            overflowed_transactions(&mut d, "service_transaction", &o.service_transactions);
            self.emit("service_transaction", iv, d);
        }
        if o.destinations.metrics.count > 0.0 {
            let mut d = base(self, "service_destination");
            overflowed_destinations(&mut d, &o.destinations);
            self.emit("service_destination", iv, d);
        }
    }
}

/// Label keys as the event encoder writes them (`.`, `*`, `"` → `_`).
fn sanitize(k: &str) -> String {
    k.replace(['.', '*', '"'], "_")
}

fn transaction_dims(d: &mut Map<String, Value>, k: &TransactionKey) {
    put(d, "transaction.root", Value::from(k.root));
    put_str(d, "transaction.name", &k.name);
    put_str(d, "transaction.type", &k.type_);
    put_str(d, "transaction.result", &k.result);
    put_str(d, "event.outcome", &k.outcome);
    put_str(d, "service.version", &k.service_version);
    put_str(d, "service.node.name", &k.service_node_name);
    put_str(d, "service.runtime.name", &k.service_runtime_name);
    put_str(d, "service.runtime.version", &k.service_runtime_version);
    put_str(d, "service.language.version", &k.service_language_version);
    put_str(d, "host.hostname", &k.host_hostname);
    put_str(d, "host.name", &k.host_name);
    put_str(d, "host.os.platform", &k.host_os_platform);
    put_str(d, "container.id", &k.container_id);
    put_str(d, "kubernetes.pod.name", &k.kubernetes_pod_name);
    put_str(d, "cloud.provider", &k.cloud_provider);
    put_str(d, "cloud.region", &k.cloud_region);
    put_str(d, "cloud.availability_zone", &k.cloud_availability_zone);
    put_str(d, "cloud.service.name", &k.cloud_service_name);
    put_str(d, "cloud.account.id", &k.cloud_account_id);
    put_str(d, "cloud.account.name", &k.cloud_account_name);
    put_str(d, "cloud.machine.type", &k.cloud_machine_type);
    put_str(d, "cloud.project.id", &k.cloud_project_id);
    put_str(d, "cloud.project.name", &k.cloud_project_name);
    if let Some(c) = k.faas_coldstart {
        put(d, "faas.coldstart", Value::from(c));
    }
    put_str(d, "faas.id", &k.faas_id);
    put_str(d, "faas.name", &k.faas_name);
    put_str(d, "faas.version", &k.faas_version);
    put_str(d, "faas.trigger.type", &k.faas_trigger_type);
}

/// `transaction.duration.{histogram,summary}`, `event.success_count`, `_doc_count`.
fn durations(d: &mut Map<String, Value>, m: &TransactionMetrics) {
    let (values, counts) = m.durations.values_counts();
    let (n, sum) = m.durations.summary();
    put(
        d,
        "transaction.duration.histogram",
        serde_json::json!({"values": values, "counts": counts}),
    );
    put(
        d,
        "transaction.duration.summary",
        serde_json::json!({"value_count": n, "sum": sum}),
    );
    if m.success_or_failure > 0.0 {
        put(
            d,
            "event.success_count",
            serde_json::json!({"value_count": num(m.success_or_failure.round()), "sum": num(m.success.round())}),
        );
    }
    d.insert("_doc_count".into(), Value::from(n));
}

fn overflowed_transactions(
    d: &mut Map<String, Value>,
    metricset: &str,
    o: &Overflow<TransactionMetrics>,
) {
    if metricset == "transaction" {
        put(d, "transaction.name", Value::from(OVERFLOW));
    } else {
        put(d, "transaction.type", Value::from(OVERFLOW));
    }
    put(
        d,
        &format!("{metricset}.aggregation.overflow_count"),
        Value::from(o.groups.count()),
    );
    durations(d, &o.metrics);
}

fn destination(d: &mut Map<String, Value>, k: &DestinationKey, m: &DestinationMetrics) {
    put_str(d, "span.name", &k.span_name);
    put_str(d, "event.outcome", &k.outcome);
    put_str(d, "service.target.type", &k.target_type);
    put_str(d, "service.target.name", &k.target_name);
    put_str(d, "span.destination.service.resource", &k.resource);
    response_time(d, m);
}

fn response_time(d: &mut Map<String, Value>, m: &DestinationMetrics) {
    put(
        d,
        "span.destination.service.response_time.count",
        num(m.count.round()),
    );
    put(
        d,
        "span.destination.service.response_time.sum",
        serde_json::json!({"us": num(m.sum_us.round())}),
    );
    d.insert("_doc_count".into(), num(m.count.round()));
}

fn overflowed_destinations(d: &mut Map<String, Value>, o: &Overflow<DestinationMetrics>) {
    put(
        d,
        "span.destination.service.resource",
        Value::from(OVERFLOW),
    );
    put(
        d,
        "service_destination.aggregation.overflow_count",
        Value::from(o.groups.count()),
    );
    response_time(d, &o.metrics);
}
