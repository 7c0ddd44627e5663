//! OTLP translation: messages built with the protobuf types, decoded from
//! their bytes, checked on the encoded documents (index and fields).

use super::*;
use crate::model::{encode, EncodeContext};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use serde_json::Value as J;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", s("checkout")),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.language", s("python")),
            kv("telemetry.sdk.version", s("1.2.3")),
            kv("host.name", s("web-1")),
            kv("team", s("payments")),
            kv("shard", Value::IntValue(7)),
        ],
        ..Default::default()
    })
}

fn base() -> RequestBase {
    RequestBase {
        received_ns: 1_700_000_000_000_000_000,
        ..Default::default()
    }
}

/// (index, document) of every event of a message.
fn docs(signal: Signal, bytes: &[u8]) -> (Vec<(String, J)>, Vec<Rejected>) {
    let mut events = Vec::new();
    let rejected = decode_otlp(signal, bytes, &base(), &mut events).expect("decodes");
    let ctx = EncodeContext {
        observer_hostname: "host".into(),
        observer_version: "9.0.0".into(),
        namespace: "default".into(),
    };
    let docs = events
        .iter()
        .map(|ev| {
            let mut out = Vec::new();
            assert!(encode(ev, &ctx, &mut out));
            let text = String::from_utf8(out).expect("utf-8");
            let mut lines = text.lines();
            let action: J = serde_json::from_str(lines.next().expect("action")).expect("json");
            let doc: J = serde_json::from_str(lines.next().expect("doc")).expect("json");
            (
                action["create"]["_index"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                doc,
            )
        })
        .collect();
    (docs, rejected)
}

fn span_of(id: u8, parent: &[u8], kind: span::SpanKind, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.to_vec(),
        name: format!("span {id}"),
        kind: kind as i32,
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_250_000_000,
        attributes,
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "my.lib".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn a_server_span_is_a_transaction_with_resource_service_and_agent() {
    let root = span_of(
        2,
        &[],
        span::SpanKind::Server,
        vec![
            kv("http.request.method", s("GET")),
            kv("http.response.status_code", Value::IntValue(503)),
        ],
    );
    let (d, rejected) = docs(Signal::Traces, &traces(vec![root]));
    assert!(rejected.is_empty());
    assert_eq!(d.len(), 1);
    let (index, doc) = &d[0];
    assert_eq!(index, "traces-apm-default");
    assert_eq!(doc["service"]["name"], "checkout");
    assert_eq!(doc["agent"]["name"], "opentelemetry/python");
    assert_eq!(doc["agent"]["version"], "1.2.3");
    assert_eq!(doc["trace"]["id"], "01010101010101010101010101010101");
    assert_eq!(doc["transaction"]["id"], "0202020202020202");
    assert_eq!(doc["transaction"]["type"], "request");
    assert_eq!(doc["transaction"]["result"], "HTTP 5xx");
    assert_eq!(doc["event"]["duration"], 250_000_000);
    assert_eq!(doc["event"]["outcome"], "failure");
    assert_eq!(doc["labels"]["team"], "payments");
    assert_eq!(doc["numeric_labels"]["shard"], 7.0);
    assert_eq!(doc["host"]["hostname"], "web-1");
}

#[test]
fn a_client_db_span_is_a_db_span_and_exception_events_are_errors() {
    let mut child = span_of(
        3,
        &[2; 8],
        span::SpanKind::Client,
        vec![
            kv("db.system", s("postgresql")),
            kv("db.statement", s("SELECT 1")),
        ],
    );
    child.status = Some(Status {
        code: status::StatusCode::Error as i32,
        ..Default::default()
    });
    child.events = vec![
        span::Event {
            name: "exception".into(),
            time_unix_nano: 1_100_000_000,
            attributes: vec![
                kv("exception.type", s("ValueError")),
                kv("exception.message", s("bad value")),
            ],
            ..Default::default()
        },
        span::Event {
            name: "retrying".into(),
            time_unix_nano: 1_200_000_000,
            ..Default::default()
        },
    ];
    let (d, _) = docs(Signal::Traces, &traces(vec![child]));
    assert_eq!(d.len(), 3);
    let err = d
        .iter()
        .find(|(i, _)| i == "logs-apm.error-default")
        .expect("error doc");
    assert_eq!(err.1["error"]["exception"][0]["type"], "ValueError");
    assert_eq!(err.1["error"]["exception"][0]["message"], "bad value");
    assert_eq!(err.1["parent"]["id"], "0303030303030303");
    assert!(err.1["error"]["grouping_key"]
        .as_str()
        .is_some_and(|k| !k.is_empty()));
    let log = d
        .iter()
        .find(|(i, _)| i == "logs-apm.app.checkout-default")
        .expect("log doc");
    assert_eq!(log.1["message"], "retrying");
    let sp = d
        .iter()
        .find(|(i, _)| i == "traces-apm-default")
        .expect("span doc");
    assert_eq!(sp.1["span"]["type"], "db");
    assert_eq!(sp.1["span"]["subtype"], "postgresql");
    assert_eq!(sp.1["span"]["db"]["statement"], "SELECT 1");
    assert_eq!(sp.1["event"]["outcome"], "failure");
    assert_eq!(sp.1["parent"]["id"], "0202020202020202");
}

#[test]
fn a_span_with_a_short_trace_id_is_rejected_alone() {
    let good = span_of(2, &[], span::SpanKind::Server, vec![]);
    let mut bad = span_of(4, &[], span::SpanKind::Server, vec![]);
    bad.trace_id = vec![9; 5];
    let (d, rejected) = docs(Signal::Traces, &traces(vec![bad, good]));
    assert_eq!(d.len(), 1);
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].message.contains("trace_id"));
}

#[test]
fn malformed_protobuf_is_one_decode_error() {
    let mut events = Vec::new();
    let e = decode_otlp(Signal::Logs, &[0xff, 0xff, 0xff], &base(), &mut events);
    assert!(matches!(e, Err(OtlpError::Decode { signal: "logs", .. })));
    assert!(events.is_empty());
}

#[test]
fn gauges_sums_histograms_and_summaries_with_the_same_attributes_share_a_metricset() {
    let point = |v: f64| NumberDataPoint {
        time_unix_nano: 5_000_000_000,
        attributes: vec![kv("route", s("/pay"))],
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let m = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "queue.depth".into(),
                        data: Some(Data::Gauge(Gauge {
                            data_points: vec![point(4.0)],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "requests".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![point(10.0)],
                            is_monotonic: true,
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "latency".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: 5_000_000_000,
                                attributes: vec![kv("route", s("/pay"))],
                                bucket_counts: vec![1, 0, 2],
                                explicit_bounds: vec![10.0, 20.0],
                                ..Default::default()
                            }],
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "rpc.latency".into(),
                        data: Some(Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                time_unix_nano: 5_000_000_000,
                                attributes: vec![kv("route", s("/pay"))],
                                count: 10,
                                sum: 123.5,
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "exponential".into(),
                        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint::default()],
                            ..Default::default()
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let (d, rejected) = docs(Signal::Metrics, &m);
    assert_eq!(rejected.len(), 1, "the exponential histogram point");
    assert_eq!(d.len(), 1);
    let (index, doc) = &d[0];
    assert_eq!(index, "metrics-apm.app.checkout-default");
    assert_eq!(doc["labels"]["route"], "/pay");
    let samples = doc["metricset"]["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 4);
    let summary = samples
        .iter()
        .find(|s| s["name"] == "rpc.latency")
        .expect("summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["value_count"], 10);
    assert_eq!(summary["sum"], 123.5);
    let h = samples
        .iter()
        .find(|s| s["name"] == "latency")
        .expect("histogram");
    let values: Vec<f64> = h["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(J::as_f64)
        .collect();
    assert_eq!(values, [5.0, 20.0]);
    assert_eq!(h["counts"], serde_json::json!([1, 2]));
}

#[test]
fn log_records_keep_severity_body_and_trace_context() {
    let nested = (0..30).fold(
        AnyValue {
            value: Some(s("deep")),
        },
        |inner, _| AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![inner],
            })),
        },
    );
    let m = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        time_unix_nano: 2_000_000_000,
                        severity_number: 13,
                        severity_text: "WARN".into(),
                        body: Some(AnyValue {
                            value: Some(s("disk almost full")),
                        }),
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        ..Default::default()
                    },
                    LogRecord {
                        body: Some(nested),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let (d, rejected) = docs(Signal::Logs, &m);
    assert!(rejected.is_empty());
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].0, "logs-apm.app.checkout-default");
    assert_eq!(d[0].1["message"], "disk almost full");
    assert_eq!(d[0].1["log"]["level"], "WARN");
    assert_eq!(d[0].1["event"]["severity"], 13);
    assert!(d[0].1["event"].get("kind").is_none(), "not a span event");
    assert_eq!(d[0].1["trace"]["id"], "01010101010101010101010101010101");
    let deep = d[1].1["message"].as_str().expect("message");
    assert!(deep.ends_with("null]]]]]]]]"), "nesting is cut: {deep}");
}

#[test]
fn array_attributes_become_label_lists_by_their_first_element_type() {
    let array = |vals: Vec<Value>| {
        Value::ArrayValue(ArrayValue {
            values: vals
                .into_iter()
                .map(|v| AnyValue { value: Some(v) })
                .collect(),
        })
    };
    let mut root = span_of(1, &[], span::SpanKind::Server, vec![]);
    root.attributes = vec![
        kv("tags", array(vec![s("a"), Value::IntValue(1), s("b")])),
        kv(
            "flags",
            array(vec![Value::BoolValue(true), Value::BoolValue(false)]),
        ),
        kv("sizes", array(vec![Value::IntValue(3), Value::IntValue(4)])),
        kv("ratios", array(vec![Value::DoubleValue(0.5)])),
        kv("empty", array(vec![])),
    ];
    let (d, _) = docs(Signal::Traces, &traces(vec![root]));
    let doc = &d[0].1;
    assert_eq!(doc["labels"]["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(doc["labels"]["flags"], serde_json::json!(["true", "false"]));
    assert_eq!(doc["numeric_labels"]["sizes"], serde_json::json!([3, 4]));
    assert_eq!(doc["numeric_labels"]["ratios"], serde_json::json!([0.5]));
    assert!(doc["labels"].get("empty").is_none());
}

/// An encoded logs export of one empty record from a resource with `attrs`.
fn one_log(attrs: Vec<KeyValue>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn agent_name_is_sdk_name_language_and_distro_and_service_name_is_cleaned() {
    let with = |attrs: Vec<KeyValue>| docs(Signal::Logs, &one_log(attrs)).0.remove(0).1;
    let d = with(vec![]);
    assert_eq!(d["agent"]["name"], "otlp");
    assert_eq!(d["agent"]["version"], "unknown");
    assert_eq!(d["service"]["name"], "unknown");
    assert_eq!(d["service"]["language"]["name"], "unknown");
    let d = with(vec![
        kv("service.name", s("unknown_service:node")),
        kv("telemetry.sdk.language", s("nodejs")),
    ]);
    assert_eq!(d["agent"]["name"], "otlp/nodejs");
    assert_eq!(d["service"]["name"], "unknown_service_node");
    let d = with(vec![
        kv("telemetry.sdk.name", s("opentelemetry")),
        kv("telemetry.sdk.language", s("java")),
        kv("telemetry.sdk.version", s("1.40.0")),
        kv("telemetry.distro.name", s("elastic")),
        kv("telemetry.distro.version", s("1.0.0")),
    ]);
    assert_eq!(d["agent"]["name"], "opentelemetry/java/elastic");
    assert_eq!(d["agent"]["version"], "1.0.0");
}

#[test]
fn only_mobile_agents_get_the_request_ip_as_client_ip() {
    let ip: std::net::IpAddr = "89.160.20.128".parse().expect("ip");
    let nat: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
    let b = RequestBase {
        client_ip: Some(ip),
        nat_ip: Some(nat),
        ..base()
    };
    for (sdk, mobile) in [("android", true), ("iOS", true), ("opentelemetry", false)] {
        let m = one_log(vec![
            kv("telemetry.sdk.name", s(sdk)),
            kv("telemetry.sdk.language", s("swift")),
        ]);
        let mut events = Vec::new();
        decode_otlp(Signal::Logs, &m, &b, &mut events).expect("decodes");
        let c = &events[0].client;
        assert_eq!(c.client_ip.is_some(), mobile, "{sdk}");
        if mobile {
            assert_eq!(c.client_ip, Some(ip));
            assert_eq!(c.source_ip, Some(ip));
            assert_eq!(c.nat_ip, Some(nat));
        }
    }
}
