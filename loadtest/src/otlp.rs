//! The `otlp` mix: OTLP/HTTP protobuf export requests as an OpenTelemetry
//! SDK sends them, cycling traces → metrics → logs, each request carrying
//! `n` items that the server turns into exactly `n` events:
//!
//! * traces: one SERVER span (a transaction) with `n - 1` CLIENT child
//!   spans (HTTP and database attributes), no span events;
//! * metrics: `n` gauge/counter points, each with its own attribute value,
//!   so no two share a metricset;
//! * logs: `n` records with severity, trace context and attributes.
//!
//! Ids and timestamps are fresh per body (`seq` seeds the ids).

use crate::corpus::mix64;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// Which OTLP signal a body carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    /// The signal of the `i`-th body: traces, metrics, logs, traces, …
    pub fn nth(i: u64) -> Signal {
        match i % 3 {
            0 => Signal::Traces,
            1 => Signal::Metrics,
            _ => Signal::Logs,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The gRPC method exporting this signal.
    pub fn grpc_method(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }

    /// Items the server refused, from a `200` answer's `partial_success`.
    pub fn rejected(self, body: &[u8]) -> u64 {
        let n = match self {
            Signal::Traces => ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_spans),
            Signal::Metrics => ExportMetricsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_data_points),
            Signal::Logs => ExportLogsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map_or(0, |p| p.rejected_log_records),
        };
        u64::try_from(n).unwrap_or(0)
    }
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// An SDK-like resource; one of eight services per body.
fn resource(seq: u64) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s(&format!("otlp-load-{}", seq % 8))),
            kv("service.version", s("1.4.2")),
            kv("deployment.environment.name", s("load")),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.language", s("java")),
            kv("telemetry.sdk.version", s("1.44.1")),
            kv("host.name", s("loadgen-host")),
            kv("process.pid", Value::IntValue(4242)),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "io.opentelemetry.loadgen".into(),
        version: "1.0.0".into(),
        ..Default::default()
    })
}

fn id(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed;
    while out.len() < len {
        x = mix64(x);
        out.extend_from_slice(&x.to_be_bytes());
    }
    out.truncate(len);
    out
}

/// The protobuf body of `signal` with `n` items (n ≥ 1), timestamped `now_ns`.
pub fn body(signal: Signal, seq: u64, n: usize, now_ns: u64) -> Vec<u8> {
    let n = n.max(1);
    match signal {
        Signal::Traces => traces(seq, n, now_ns),
        Signal::Metrics => metrics(seq, n, now_ns),
        Signal::Logs => logs(seq, n, now_ns),
    }
}

fn traces(seq: u64, n: usize, now_ns: u64) -> Vec<u8> {
    let trace_id = id(seq, 16);
    let root_id = id(seq ^ 0x5151, 8);
    let start = now_ns.saturating_sub(200_000_000);
    let mut spans = Vec::with_capacity(n);
    spans.push(Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: "GET /api/orders/{id}".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: now_ns,
        attributes: vec![
            kv("http.request.method", s("GET")),
            kv("http.route", s("/api/orders/{id}")),
            kv("url.full", s("http://shop.example/api/orders/42")),
            kv("http.response.status_code", Value::IntValue(200)),
            kv("user_agent.original", s("Mozilla/5.0 loadgen")),
        ],
        ..Default::default()
    });
    for i in 1..n as u64 {
        let db = i % 2 == 0;
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: id(seq.wrapping_mul(1_000_003).wrapping_add(i), 8),
            parent_span_id: root_id.clone(),
            name: if db { "SELECT orders" } else { "GET" }.into(),
            kind: SpanKind::Client as i32,
            start_time_unix_nano: start + i * 1_000,
            end_time_unix_nano: start + i * 1_000 + 500_000,
            attributes: if db {
                vec![
                    kv("db.system", s("postgresql")),
                    kv("db.namespace", s("shop")),
                    kv("db.query.text", s("SELECT * FROM orders WHERE id = $1")),
                    kv("server.address", s("db.internal")),
                    kv("server.port", Value::IntValue(5432)),
                ]
            } else {
                vec![
                    kv("http.request.method", s("GET")),
                    kv("url.full", s("http://inventory.internal/items/42")),
                    kv("http.response.status_code", Value::IntValue(200)),
                    kv("server.address", s("inventory.internal")),
                    kv("server.port", Value::IntValue(80)),
                ]
            },
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(seq),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics(seq: u64, n: usize, now_ns: u64) -> Vec<u8> {
    // alternate a gauge and a counter; every point has its own `instance`
    // attribute, so each is one metricset
    let point = |i: usize, v: f64| NumberDataPoint {
        start_time_unix_nano: now_ns.saturating_sub(60_000_000_000),
        time_unix_nano: now_ns,
        attributes: vec![
            kv("instance", Value::IntValue(i as i64)),
            kv("pool", s("default")),
        ],
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let gauges: Vec<_> = (0..n)
        .step_by(2)
        .map(|i| point(i, (seq % 100) as f64))
        .collect();
    let counters: Vec<_> = (1..n)
        .step_by(2)
        .map(|i| point(i, (seq * 7 % 1000) as f64))
        .collect();
    let mut list = vec![Metric {
        name: "pool.connections.used".into(),
        unit: "{connection}".into(),
        data: Some(Data::Gauge(Gauge {
            data_points: gauges,
        })),
        ..Default::default()
    }];
    if !counters.is_empty() {
        list.push(Metric {
            name: "pool.requests".into(),
            unit: "{request}".into(),
            data: Some(Data::Sum(Sum {
                data_points: counters,
                aggregation_temporality: 2,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(seq),
            scope_metrics: vec![ScopeMetrics {
                scope: scope(),
                metrics: list,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs(seq: u64, n: usize, now_ns: u64) -> Vec<u8> {
    let trace_id = id(seq, 16);
    let records = (0..n as u64)
        .map(|i| LogRecord {
            time_unix_nano: now_ns + i,
            observed_time_unix_nano: now_ns + i,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: Some(AnyValue {
                value: Some(s(&format!("order {} shipped to warehouse {}", seq, i % 16))),
            }),
            attributes: vec![
                kv("code.function", s("ship")),
                kv("order.items", Value::IntValue((i % 9) as i64 + 1)),
            ],
            trace_id: trace_id.clone(),
            span_id: id(seq ^ i, 8),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(seq),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_carries_exactly_n_items() {
        for n in [1, 2, 7, 100] {
            let t = ExportTraceServiceRequest::decode(&body(Signal::Traces, 3, n, 1)[..])
                .expect("traces");
            assert_eq!(t.resource_spans[0].scope_spans[0].spans.len(), n);
            let m = ExportMetricsServiceRequest::decode(&body(Signal::Metrics, 3, n, 1)[..])
                .expect("metrics");
            let points: usize = m.resource_metrics[0].scope_metrics[0]
                .metrics
                .iter()
                .map(|x| match &x.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    _ => 0,
                })
                .sum();
            assert_eq!(points, n);
            let l =
                ExportLogsServiceRequest::decode(&body(Signal::Logs, 3, n, 1)[..]).expect("logs");
            assert_eq!(l.resource_logs[0].scope_logs[0].log_records.len(), n);
        }
    }
}
