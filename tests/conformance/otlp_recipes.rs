//! The OTLP recipes of `otlp_test.go`: the messages the upstream system
//! tests build with the OpenTelemetry Go SDK (or its `pdata` types), built
//! here with `opentelemetry-proto`'s types, and sent over OTLP/gRPC by
//! [`export_grpc`] to the server's gRPC listener.
//!
//! The Go SDK's default resource is reproduced as it reports itself for the
//! test binary `systemtest.test` (`service.name` `unknown_service:…`,
//! `telemetry.sdk.*`); its version is ignored by the approvals.

use crate::emulate::Fields;
use crate::recipes::{index_matches, Check, Recipe, Send};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// Which OTLP export a message is.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

/// The one transport of the OTLP recipes: an OTLP/gRPC export, as the
/// upstream tests send them (`extra` becomes the call's metadata).
fn otlp(signal: Signal, body: Vec<u8>, extra: &[(&'static str, &str)]) -> Send {
    Send {
        grpc: Some(signal),
        path: "",
        body,
        headers: extra.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        status: 200,
    }
}

/// Sends `body`, an encoded export request of `signal`, to the gRPC
/// listener at `addr` with `metadata`; an error names the gRPC status.
pub async fn export_grpc(
    addr: std::net::SocketAddr,
    signal: Signal,
    body: &[u8],
    metadata: &[(&'static str, String)],
) -> Result<(), String> {
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting to the gRPC listener: {e}"))?;
    fn request<T>(
        msg: T,
        metadata: &[(&'static str, String)],
    ) -> Result<tonic::Request<T>, String> {
        let mut r = tonic::Request::new(msg);
        for (k, v) in metadata {
            let v = v.parse().map_err(|_| format!("metadata {k}: {v:?}"))?;
            r.metadata_mut().insert(*k, v);
        }
        Ok(r)
    }
    let bad = |e: prost::DecodeError| e.to_string();
    let status = match signal {
        Signal::Traces => {
            let m = ExportTraceServiceRequest::decode(body).map_err(bad)?;
            TraceServiceClient::new(channel)
                .export(request(m, metadata)?)
                .await
                .err()
        }
        Signal::Metrics => {
            let m = ExportMetricsServiceRequest::decode(body).map_err(bad)?;
            MetricsServiceClient::new(channel)
                .export(request(m, metadata)?)
                .await
                .err()
        }
        Signal::Logs => {
            let m = ExportLogsServiceRequest::decode(body).map_err(bad)?;
            LogsServiceClient::new(channel)
                .export(request(m, metadata)?)
                .await
                .err()
        }
    };
    match status {
        None => Ok(()),
        Some(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn array(values: Vec<Value>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: values
            .into_iter()
            .map(|v| AnyValue { value: Some(v) })
            .collect(),
    })
}

/// The Go SDK's default resource for the test binary, plus `extra`.
fn go_resource(extra: Vec<KeyValue>) -> Option<Resource> {
    let mut attributes = vec![
        kv("service.name", s("unknown_service:systemtest.test")),
        kv("telemetry.sdk.language", s("go")),
        kv("telemetry.sdk.name", s("opentelemetry")),
        kv("telemetry.sdk.version", s("1.31.0")),
    ];
    attributes.extend(extra);
    Some(Resource {
        attributes,
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.into(),
        ..Default::default()
    })
}

fn first_str<'a>(d: &'a Fields, k: &str) -> Option<&'a str> {
    d.get(k)
        .and_then(|v| v.first())
        .and_then(serde_json::Value::as_str)
}

/// `TestOTLPGRPCTraces`: one root span lasting a year, with a plain event
/// and a recorded error.
fn traces() -> Vec<u8> {
    let hex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
            .collect()
    };
    let start: u64 = 123_000_000_456;
    let ms = 1_000_000;
    let year = 365 * 24 * 3600 * 1_000_000_000u64;
    let span = Span {
        trace_id: hex("d2acbef8b37655e48548fd9d61ad6114"),
        span_id: hex("b3ee9be3b687a611"),
        name: "operation_name".into(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + year,
        attributes: vec![kv(
            "span_attribute_array",
            array(vec![s("a"), s("b"), s("c")]),
        )],
        events: vec![
            span::Event {
                time_unix_nano: start + ms,
                name: "a_span_event".into(),
                ..Default::default()
            },
            span::Event {
                time_unix_nano: start + 2 * ms,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", s("*errors.errorString")),
                    kv("exception.message", s("kablamo")),
                    kv("exception.stacktrace", s("not an actual real stack trace")),
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: go_resource(vec![
                kv("resource_attribute_array", array(vec![s("a"), s("b")])),
                kv("resource_attribute_bool", Value::BoolValue(true)),
                kv(
                    "resource_attribute_bool_array",
                    array(vec![Value::BoolValue(true), Value::BoolValue(false)]),
                ),
                kv("resource_attribute_float", Value::DoubleValue(123456.789)),
                kv(
                    "resource_attribute_float_array",
                    array(vec![
                        Value::DoubleValue(123456.789),
                        Value::DoubleValue(987_654_321.123_456_8),
                    ]),
                ),
                kv("resource_attribute_int", Value::IntValue(123456)),
            ]),
            scope_spans: vec![ScopeSpans {
                scope: scope("systemtest"),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// `TestOTLPGRPCMetrics`: what the Go SDK's meter provider exports at
/// shutdown (a float counter and an int histogram with explicit bounds,
/// each collected at its own instant), then a bare summary sent with the
/// low-level client (no resource, no scope).
fn metrics() -> (Vec<u8>, Vec<u8>) {
    let start = 1_700_000_000_000_000_000u64;
    let cumulative = AggregationTemporality::Cumulative as i32;
    let sdk = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: go_resource(vec![]),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("test-meter"),
                metrics: vec![
                    Metric {
                        name: "counter".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint {
                                start_time_unix_nano: start,
                                time_unix_nano: start + 1_000,
                                value: Some(number_data_point::Value::AsDouble(1.0)),
                                ..Default::default()
                            }],
                            aggregation_temporality: cumulative,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "histogram".into(),
                        data: Some(Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                start_time_unix_nano: start,
                                time_unix_nano: start + 2_000,
                                count: 4,
                                sum: Some(21148.0),
                                bucket_counts: vec![0, 1, 0, 1, 1, 1],
                                explicit_bounds: vec![0.0, 1.0, 100.0, 1000.0, 10000.0],
                                min: Some(1.0),
                                max: Some(20000.0),
                                ..Default::default()
                            }],
                            aggregation_temporality: cumulative,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let summary = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "summary".into(),
                    data: Some(Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint {
                            count: 10,
                            sum: 123.456,
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    (sdk.encode_to_vec(), summary.encode_to_vec())
}

/// `newLogs` / `newMobileLogs`: one record with trace context, severity and
/// attributes, under a resource with only the SDK's language (and name).
fn logs(resource: Vec<KeyValue>) -> Vec<u8> {
    let mut trace_id = vec![0; 16];
    trace_id[0] = 1;
    let mut span_id = vec![0; 8];
    span_id[0] = 2;
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_000_000_000,
                    severity_number: SeverityNumber::Info as i32,
                    severity_text: "Info".into(),
                    body: Some(AnyValue {
                        value: Some(s("a log message")),
                    }),
                    attributes: vec![
                        kv("key", s("value")),
                        kv("numeric_key", Value::DoubleValue(1234.0)),
                    ],
                    trace_id,
                    span_id,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Appends the six OTLP recipes.
pub fn recipes(out: &mut Vec<Recipe>) {
    out.push(Recipe {
        config: vec![],
        sends: vec![otlp(Signal::Traces, traces(), &[])],
        checks: vec![Check {
            approval: "TestOTLPGRPCTraces".into(),
            query: Box::new(|idx, _| index_matches("traces-apm*,logs-apm*", idx)),
            dynamic: vec!["error.id", "agent.version"],
        }],
        note: None,
        sourcemap: None,
    });
    let (sdk, summary) = metrics();
    let with_field = |field: &'static str| -> crate::recipes::Query {
        Box::new(move |idx, d| index_matches("metrics-apm.app.*", idx) && d.contains_key(field))
    };
    out.push(Recipe {
        config: vec![],
        sends: vec![
            otlp(Signal::Metrics, sdk, &[]),
            otlp(Signal::Metrics, summary, &[]),
        ],
        checks: vec![
            Check {
                approval: "TestOTLPGRPCMetrics_counter".into(),
                query: with_field("counter"),
                dynamic: vec!["@timestamp", "agent.version"],
            },
            Check {
                approval: "TestOTLPGRPCMetrics_summary".into(),
                query: with_field("summary"),
                dynamic: vec!["@timestamp"],
            },
            Check {
                approval: "TestOTLPGRPCMetrics_histogram".into(),
                query: with_field("histogram"),
                dynamic: vec!["@timestamp", "agent.version"],
            },
        ],
        note: None,
        sourcemap: None,
    });
    out.push(Recipe {
        config: vec![],
        sends: vec![otlp(
            Signal::Logs,
            logs(vec![kv("telemetry.sdk.language", s("go"))]),
            &[],
        )],
        checks: vec![Check {
            approval: "TestOTLPGRPCLogs".into(),
            query: Box::new(|idx, _| index_matches("logs-apm*", idx)),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });
    out.push(Recipe {
        config: vec![],
        sends: vec![otlp(
            Signal::Logs,
            logs(vec![
                kv("telemetry.sdk.language", s("java")),
                kv("telemetry.sdk.name", s("android")),
            ]),
            &[("x-forwarded-for", "89.160.20.128")],
        )],
        checks: vec![Check {
            approval: "TestOTLPGRPCLogsClientIP".into(),
            query: Box::new(|idx, d| {
                index_matches("logs-apm*", idx) && first_str(d, "message").is_some()
            }),
            dynamic: vec![
                "client.geo.city_name",
                "client.geo.location",
                "client.geo.region_iso_code",
                "client.geo.region_name",
            ],
        }],
        note: None,
        sourcemap: None,
    });
}
