//! OTLP over HTTP through the real server: protobuf traces, metrics and logs
//! with a secret token land in their data streams; refusals come back in
//! OTLP's shape (status + `google.rpc.Status`, or `partial_success`).

mod common;

use apm_rs::http::otlp::RpcStatus;
use common::TestServer;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;

const TOKEN: &str = "apm-server.auth.secret_token=s3cr3t";
const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const AUTH: (&str, &str) = ("authorization", "Bearer s3cr3t");

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(service.into())),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "telemetry.sdk.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("opentelemetry".into())),
                }),
                ..Default::default()
            },
            KeyValue {
                key: "telemetry.sdk.language".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("rust".into())),
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    })
}

fn span(id: u8, trace_len: usize) -> Span {
    Span {
        trace_id: vec![7; trace_len],
        span_id: vec![id; 8],
        name: "GET /".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("otlp-svc"),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics() -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("otlp-svc"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "queue.depth".into(),
                    data: Some(Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: 1_700_000_000_000_000_000,
                            value: Some(number_data_point::Value::AsInt(3)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs() -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("otlp-svc"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(Value::StringValue("hello from otlp".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// POSTs `body` with a token and the protobuf content type; (status, body bytes).
async fn export(url: &str, body: Vec<u8>) -> (u16, bytes::Bytes) {
    let r = common::client()
        .post(url)
        .header(PROTOBUF.0, PROTOBUF.1)
        .header(AUTH.0, AUTH.1)
        .body(body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.bytes().await.expect("body"))
}

#[tokio::test]
async fn traces_metrics_and_logs_with_a_token_reach_their_data_streams() {
    let mut s = TestServer::start(&[TOKEN]);
    let gz = common::gzip(&logs());
    for (path, body, extra) in [
        ("/v1/traces", traces(vec![span(1, 16)]), None),
        ("/v1/metrics", metrics(), None),
        ("/v1/logs", gz, Some(("content-encoding", "gzip"))),
    ] {
        let mut h = vec![PROTOBUF, AUTH];
        h.extend(extra);
        let r = common::post(&format!("{}{path}", s.url), body, &h).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
    }
    assert!(s.shutdown().await);
    let docs = s.docs();
    let mut indices: Vec<&str> = docs.iter().map(|(i, _)| i.as_str()).collect();
    indices.sort();
    assert_eq!(
        indices,
        [
            "logs-apm.app.otlp_svc-default",
            "metrics-apm.app.otlp_svc-default",
            "traces-apm-default"
        ]
    );
    for (_, d) in &docs {
        assert_eq!(d["service"]["name"], "otlp-svc");
        assert_eq!(d["agent"]["name"], "opentelemetry/rust");
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_401_and_nothing_is_indexed() {
    let mut s = TestServer::start(&[TOKEN]);
    let r = common::post(
        &format!("{}/v1/traces", s.url),
        traces(vec![span(1, 16)]),
        &[PROTOBUF, ("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(s.shutdown().await);
    assert!(s.docs().is_empty());
}

#[tokio::test]
async fn a_span_with_a_bad_trace_id_is_a_partial_success_and_the_rest_is_indexed() {
    let mut s = TestServer::start(&[TOKEN]);
    let body = traces(vec![span(1, 16), span(2, 3), span(3, 16)]);
    let (status, body) = export(&format!("{}/v1/traces", s.url), body).await;
    assert_eq!(status, 200);
    let resp = ExportTraceServiceResponse::decode(body).expect("export response");
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("trace_id"));
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 2);
}

#[tokio::test]
async fn malformed_protobuf_is_400_invalid_argument() {
    let s = TestServer::start(&[TOKEN]);
    let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
    let (status, body) = export(&format!("{}/v1/logs", s.url), garbage).await;
    assert_eq!(status, 400);
    let st = RpcStatus::decode(body).expect("google.rpc.Status");
    assert_eq!(st.code, 3);
    assert!(
        st.message.contains("failed to decode OTLP logs"),
        "{}",
        st.message
    );
}

/// An OTLP/JSON export of `signal` with the fixture's resource.
fn json_export(signal: &str, scope_items: &str) -> Vec<u8> {
    let resource = r#"{"attributes":[{"key":"service.name","value":{"stringValue":"otlp-json"}},{"key":"telemetry.sdk.name","value":{"stringValue":"opentelemetry"}},{"key":"telemetry.sdk.language","value":{"stringValue":"js"}}]}"#;
    let (outer, scopes) = match signal {
        "traces" => ("resourceSpans", "scopeSpans"),
        "metrics" => ("resourceMetrics", "scopeMetrics"),
        _ => ("resourceLogs", "scopeLogs"),
    };
    format!(r#"{{"{outer}":[{{"resource":{resource},"{scopes}":[{{"scope":{{"name":"json-test"}},{scope_items}}}]}}]}}"#)
        .into_bytes()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn otlp_json_with_hex_ids_and_string_integers_reaches_the_data_streams() {
    let mut s = TestServer::start(&[TOKEN]);
    let spans = r#""spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /json","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000250000000,"attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}},{"key":"http.response.status_code","value":{"intValue":"200"}}],"status":{"code":1}}]"#;
    let metrics = r#""metrics":[{"name":"jobs","sum":{"dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"42"}],"aggregationTemporality":2,"isMonotonic":true}}]"#;
    let logs = r#""logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":9,"severityText":"Info","body":{"stringValue":"hello in json"},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]"#;
    for (signal, items) in [("traces", spans), ("metrics", metrics), ("logs", logs)] {
        let r = common::post(
            &format!("{}/v1/{signal}", s.url),
            json_export(signal, items),
            &[JSON, AUTH],
        )
        .await;
        assert_eq!(r.status, 200, "{signal}: {}", r.body);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body, "{}", "{signal}: no partial success");
    }
    assert!(s.shutdown().await);
    let docs = s.docs();
    let find = |index: &str| {
        docs.iter()
            .find(|(i, _)| i == index)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no document in {index}: {docs:?}"))
    };
    let tx = find("traces-apm-default");
    assert_eq!(tx["trace"]["id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(tx["transaction"]["id"], "eee19b7ec3c1b174");
    assert_eq!(tx["transaction"]["result"], "HTTP 2xx");
    assert_eq!(tx["event"]["duration"], 250_000_000, "{tx}");
    assert_eq!(tx["service"]["name"], "otlp-json");
    assert_eq!(tx["agent"]["name"], "opentelemetry/js");
    let m = find("metrics-apm.app.otlp_json-default");
    assert_eq!(m["metricset"]["samples"][0]["value"], 42, "{m}");
    assert_eq!(m["metricset"]["samples"][0]["type"], "counter", "{m}");
    let l = find("logs-apm.app.otlp_json-default");
    assert_eq!(l["message"], "hello in json");
    assert_eq!(l["span"]["id"], "eee19b7ec3c1b174");
    assert_eq!(l["event"]["severity"], 9);
}

#[tokio::test]
async fn an_otlp_json_partial_success_is_answered_in_json() {
    let mut s = TestServer::start(&[TOKEN]);
    let spans = r#""spans":[{"traceId":"abcd","spanId":"eee19b7ec3c1b174","name":"bad","startTimeUnixNano":"1","endTimeUnixNano":"2"},{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"good","startTimeUnixNano":"1","endTimeUnixNano":"2"}]"#;
    let r = common::post(
        &format!("{}/v1/traces", s.url),
        json_export("traces", spans),
        &[JSON, AUTH],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON response");
    let rejected = &v["partialSuccess"]["rejectedSpans"];
    assert!(rejected == "1" || rejected == 1, "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("trace_id")));
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 1);
}

#[tokio::test]
async fn malformed_otlp_json_is_400_with_a_json_status() {
    let s = TestServer::start(&[TOKEN]);
    // an attribute value nested 10,000 deep stops at the JSON parser's depth limit
    let deep = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"k","value":{}"x"{}}}]}}}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(10_000),
        "]}}".repeat(10_000)
    );
    for body in [
        &b"{\"resourceSpans\": 5}"[..],
        b"{not json",
        b"{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"traceId\":\"zz\"}]}]}]}",
        deep.as_bytes(),
    ] {
        let r = common::post(
            &format!("{}/v1/traces", s.url),
            body.to_vec(),
            &[JSON, AUTH],
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.headers["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON status");
        assert_eq!(v["code"], 3);
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("failed to decode OTLP traces")),
            "{v}"
        );
    }
}

#[tokio::test]
async fn content_types_other_than_protobuf_or_json_are_415() {
    let s = TestServer::start(&[TOKEN]);
    let r = common::post(
        &format!("{}/v1/traces", s.url),
        b"{}".to_vec(),
        &[("content-type", "text/plain"), AUTH],
    )
    .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn a_message_inflating_over_the_size_limit_is_413_and_an_empty_one_is_accepted() {
    let s = TestServer::start(&[TOKEN]);
    let bomb = common::gzip(&vec![0u8; apm_rs::http::otlp::MAX_MESSAGE_BYTES + 1]);
    let r = common::post(
        &format!("{}/v1/logs", s.url),
        bomb,
        &[PROTOBUF, AUTH, ("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(r.status, 413);
    let (status, body) = export(&format!("{}/v1/logs", s.url), Vec::new()).await;
    assert_eq!(status, 200);
    let resp = ExportLogsServiceResponse::decode(body).expect("response");
    assert!(resp.partial_success.is_none());
}
