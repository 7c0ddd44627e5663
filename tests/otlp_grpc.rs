//! OTLP over gRPC through the real server (`apm-server.otlp.grpc.host`),
//! with opentelemetry-proto's generated tonic clients: traces, metrics and
//! logs with a secret token or an API key land in their data streams;
//! refusals come back as gRPC status codes (`UNAUTHENTICATED`,
//! `PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE`,
//! `INVALID_ARGUMENT`) or as `partial_success`.

mod common;

use apm_rs::pipeline::PipelineHooks;
use common::gate::{Gate, GatedFactory};
use common::TestServer;
use es_double::{ApiKeyAnswer, EsDouble};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

const GRPC: &str = "apm-server.otlp.grpc.host=127.0.0.1:0";
const TOKEN: &str = "apm-server.auth.secret_token=s3cr3t";
const BEARER: &str = "Bearer s3cr3t";

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A resource with `service.name` and the `telemetry.sdk.*` pair, each when non-empty.
fn resource(service: &str, sdk_name: &str, language: &str) -> Option<Resource> {
    let mut attributes = Vec::new();
    for (k, v) in [
        ("service.name", service),
        ("telemetry.sdk.name", sdk_name),
        ("telemetry.sdk.language", language),
    ] {
        if !v.is_empty() {
            attributes.push(kv(k, v));
        }
    }
    Some(Resource {
        attributes,
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

fn traces_of(resource: Option<Resource>, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    traces_of(resource("grpc-svc", "opentelemetry", "rust"), spans)
}

fn metrics() -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("grpc-svc", "opentelemetry", "rust"),
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
}

fn logs(message: String) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("grpc-svc", "opentelemetry", "rust"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(Value::StringValue(message)),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `msg` with the given metadata.
fn call<T>(msg: T, metadata: &[(&'static str, &str)]) -> Request<T> {
    let mut r = Request::new(msg);
    for (k, v) in metadata {
        r.metadata_mut()
            .insert(*k, v.parse().expect("ascii metadata"));
    }
    r
}

fn start(extra: &[&str]) -> TestServer {
    let mut o = vec![GRPC];
    o.extend_from_slice(extra);
    TestServer::start(&o)
}

async fn channel(s: &TestServer) -> Channel {
    let addr = s
        .server
        .as_ref()
        .and_then(|r| r.grpc_addr)
        .expect("gRPC listener on");
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn export_traces(
    ch: &Channel,
    req: Request<ExportTraceServiceRequest>,
) -> Result<
    tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
    tonic::Status,
> {
    TraceServiceClient::new(ch.clone()).export(req).await
}

#[tokio::test]
async fn traces_metrics_and_gzipped_logs_with_a_token_reach_their_data_streams() {
    let mut s = start(&[TOKEN]);
    let ch = channel(&s).await;
    let r = export_traces(
        &ch,
        call(traces(vec![span(1, 16)]), &[("authorization", BEARER)]),
    )
    .await
    .expect("traces");
    assert!(r.into_inner().partial_success.is_none());
    MetricsServiceClient::new(ch.clone())
        .export(call(metrics(), &[("authorization", BEARER)]))
        .await
        .expect("metrics");
    LogsServiceClient::new(ch.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .export(call(
            logs("hello over grpc".into()),
            &[("authorization", BEARER)],
        ))
        .await
        .expect("logs");
    let calls = |method: &str, code: &str| {
        s.telemetry()
            .grpc_requests
            .with_label_values(&[method, code])
            .get()
    };
    assert_eq!(
        calls(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            "0"
        ),
        1
    );
    assert_eq!(
        calls(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            "0"
        ),
        1
    );
    assert!(s.shutdown().await);
    let docs = s.docs();
    let mut indices: Vec<&str> = docs.iter().map(|(i, _)| i.as_str()).collect();
    indices.sort();
    assert_eq!(
        indices,
        [
            "logs-apm.app.grpc_svc-default",
            "metrics-apm.app.grpc_svc-default",
            "traces-apm-default"
        ]
    );
    for (_, d) in &docs {
        assert_eq!(d["service"]["name"], "grpc-svc");
        assert_eq!(d["agent"]["name"], "opentelemetry/rust");
    }
    let log = docs
        .iter()
        .find(|(i, _)| i.starts_with("logs-"))
        .map(|(_, d)| d)
        .expect("log");
    assert_eq!(log["message"], "hello over grpc");
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_unauthenticated_and_nothing_is_indexed() {
    let mut s = start(&[TOKEN]);
    let ch = channel(&s).await;
    for md in [vec![("authorization", "Bearer wrong")], vec![]] {
        let e = export_traces(&ch, call(traces(vec![span(1, 16)]), &md))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    let refused = s
        .telemetry()
        .grpc_requests
        .with_label_values(&[
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            "16",
        ])
        .get();
    assert_eq!(refused, 2);
    assert!(s.shutdown().await);
    assert!(s.docs().is_empty());
}

#[tokio::test]
async fn an_api_key_needs_event_write() {
    let es = EsDouble::start();
    es.set_api_key("ingest", "k", ApiKeyAnswer::granted("u1", &["event:write"]));
    es.set_api_key(
        "cfg",
        "k",
        ApiKeyAnswer::granted("u2", &["config_agent:read"]),
    );
    let hosts = format!(
        "apm-server.auth.api_key.elasticsearch.hosts=[\"{}\"]",
        es.url()
    );
    let mut s = start(&["apm-server.auth.api_key.enabled=true", &hosts]);
    let ch = channel(&s).await;
    let key = |id: &str| {
        use base64::Engine;
        format!(
            "ApiKey {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:k"))
        )
    };
    let ingest = key("ingest");
    export_traces(
        &ch,
        call(traces(vec![span(1, 16)]), &[("authorization", &ingest)]),
    )
    .await
    .expect("event:write may export");
    let cfg = key("cfg");
    let e = export_traces(
        &ch,
        call(traces(vec![span(2, 16)]), &[("authorization", &cfg)]),
    )
    .await
    .expect_err("no event:write");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let wrong = key("nobody");
    let e = export_traces(
        &ch,
        call(traces(vec![span(3, 16)]), &[("authorization", &wrong)]),
    )
    .await
    .expect_err("unknown key");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 1);
}

#[tokio::test]
async fn anonymous_exports_pass_only_the_allow_lists() {
    let mut s = start(&[
        TOKEN,
        "apm-server.auth.anonymous.enabled=true",
        "apm-server.auth.anonymous.allow_agent=[\"opentelemetry/swift\"]",
        "apm-server.auth.anonymous.allow_service=[\"allowed_service\"]",
    ]);
    let ch = channel(&s).await;
    let send = |service: &'static str, sdk: &'static str, lang: &'static str| {
        let ch = ch.clone();
        async move {
            export_traces(
                &ch,
                call(
                    traces_of(resource(service, sdk, lang), vec![span(1, 16)]),
                    &[],
                ),
            )
            .await
        }
    };
    send("allowed_service", "opentelemetry", "swift")
        .await
        .expect("allowed agent and service");
    for (service, sdk, lang, text) in [
        (
            "allowed_service",
            "opentelemetry",
            "go",
            "unauthorized: anonymous access not permitted for agent \"opentelemetry/go\"",
        ),
        (
            "unallowed_service",
            "opentelemetry",
            "swift",
            "unauthorized: anonymous access not permitted for service \"unallowed_service\"",
        ),
        (
            "allowed_service",
            "",
            "",
            "unauthorized: anonymous access not permitted for agent \"otlp\"",
        ),
        (
            "",
            "opentelemetry",
            "swift",
            "unauthorized: anonymous access not permitted for service \"unknown\"",
        ),
    ] {
        let e = send(service, sdk, lang).await.expect_err("refused");
        assert_eq!((e.code(), e.message()), (Code::PermissionDenied, text));
    }
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 1);
}

#[tokio::test]
async fn the_anonymous_rate_limit_is_resource_exhausted_per_forwarded_ip() {
    let s = start(&[
        TOKEN,
        "apm-server.auth.anonymous.enabled=true",
        "apm-server.auth.anonymous.allow_agent=[\"opentelemetry/rust\"]",
        "apm-server.auth.anonymous.rate_limit.event_limit=2",
        "apm-server.auth.anonymous.rate_limit.ip_limit=10",
    ]);
    let ch = channel(&s).await;
    let mut refused = None;
    for i in 0..50u8 {
        let r = export_traces(
            &ch,
            call(traces(vec![span(i, 16)]), &[("x-real-ip", "10.11.12.13")]),
        )
        .await;
        if let Err(e) = r {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("rate limited within 50 calls");
    assert_eq!(
        (e.code(), e.message()),
        (Code::ResourceExhausted, "rate limit exceeded")
    );
    // another client IP has its own bucket
    export_traces(
        &ch,
        call(traces(vec![span(99, 16)]), &[("x-real-ip", "10.11.12.14")]),
    )
    .await
    .expect("other IP");
}

#[tokio::test]
async fn a_bad_span_is_a_partial_success_and_an_all_bad_message_is_invalid_argument() {
    let mut s = start(&[TOKEN]);
    let ch = channel(&s).await;
    let r = export_traces(
        &ch,
        call(
            traces(vec![span(1, 16), span(2, 3), span(3, 16)]),
            &[("authorization", BEARER)],
        ),
    )
    .await
    .expect("partial success");
    let partial = r.into_inner().partial_success.expect("partial_success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("trace_id"), "{partial:?}");
    let e = export_traces(
        &ch,
        call(traces(vec![span(4, 5)]), &[("authorization", BEARER)]),
    )
    .await
    .expect_err("every span refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 2);
}

/// A raw HTTP/2 gRPC call to `path` sending `frame` (then ending the
/// stream); the answer's `grpc-status`.
async fn raw_call(addr: std::net::SocketAddr, path: &str, frame: Vec<u8>) -> String {
    let (resp, mut stream) = open_raw_call(addr, path).await;
    stream.send_data(frame.into(), true).expect("data");
    grpc_status(resp.await.expect("response")).await
}

/// Opens an authorized raw HTTP/2 gRPC call to `path`: the answer to come
/// and the stream the test sends the message on.
async fn open_raw_call(
    addr: std::net::SocketAddr,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", BEARER)
        .body(())
        .expect("request");
    client.send_request(req, false).expect("send")
}

/// The `grpc-status` of an answer: from its headers when it is
/// trailers-only, else from its trailers.
async fn grpc_status(resp: http::Response<h2::RecvStream>) -> String {
    let (parts, mut body) = resp.into_parts();
    if let Some(c) = parts.headers.get("grpc-status") {
        return c.to_str().expect("ascii").to_string();
    }
    while let Some(chunk) = body.data().await {
        chunk.expect("data");
    }
    let trailers = body.trailers().await.expect("trailers").expect("some");
    trailers["grpc-status"].to_str().expect("ascii").to_string()
}

/// An uncompressed gRPC frame holding `msg`.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_and_an_unknown_method_unimplemented() {
    let mut s = start(&[TOKEN]);
    let addr = s.server.as_ref().and_then(|r| r.grpc_addr).expect("grpc");
    let garbage = frame(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let traces = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let code = raw_call(addr, traces, garbage.clone()).await;
    assert_eq!(code, (Code::InvalidArgument as i32).to_string());
    let code = raw_call(
        addr,
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
        garbage,
    )
    .await;
    assert_eq!(code, (Code::Unimplemented as i32).to_string());
    // an empty message is a valid, empty export
    assert_eq!(raw_call(addr, traces, frame(&[])).await, "0");
    assert!(s.shutdown().await);
    assert!(s.docs().is_empty());
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_resource_exhausted_plain_or_gzipped() {
    let mut s = start(&[TOKEN]);
    let ch = channel(&s).await;
    let big = || logs("x".repeat(apm_rs::http::otlp_export::MAX_MESSAGE_BYTES + 1));
    let e = LogsServiceClient::new(ch.clone())
        .export(call(big(), &[("authorization", BEARER)]))
        .await
        .expect_err("too large");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let e = LogsServiceClient::new(ch.clone())
        .send_compressed(CompressionEncoding::Gzip)
        .export(call(big(), &[("authorization", BEARER)]))
        .await
        .expect_err("inflates too large");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // the connection still serves
    LogsServiceClient::new(ch.clone())
        .export(call(logs("small".into()), &[("authorization", BEARER)]))
        .await
        .expect("small message");
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 1);
}

#[tokio::test]
async fn over_tls_with_the_intake_certificate() {
    let Some(c) = common::corpus("over_tls_with_the_intake_certificate") else {
        return;
    };
    let tls = c.join("tls");
    let cert = format!(
        "apm-server.ssl.certificate={}",
        tls.join("certificate.pem").display()
    );
    let key = format!("apm-server.ssl.key={}", tls.join("key.pem").display());
    let mut s = start(&[TOKEN, &cert, &key]);
    let addr = s.server.as_ref().and_then(|r| r.grpc_addr).expect("grpc");
    let ca = std::fs::read(tls.join("ca.crt.pem")).expect("ca");
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name("apm-server"),
        )
        .expect("tls config")
        .connect()
        .await
        .expect("TLS connect");
    export_traces(
        &ch,
        call(traces(vec![span(1, 16)]), &[("authorization", BEARER)]),
    )
    .await
    .expect("over TLS");
    // plaintext HTTP/2 to the TLS port does not get through
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let refused = match plain.connect().await {
        Err(_) => true,
        Ok(ch) => export_traces(
            &ch,
            call(traces(vec![span(2, 16)]), &[("authorization", BEARER)]),
        )
        .await
        .is_err(),
    };
    assert!(refused);
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 1);
}

const ONE_SLOT_PIPELINE: &str = "pipeline={decoder: {instances: 1, capacity: 1}, validator: {instances: 1, capacity: 1}, rate: {instances: 1, capacity: 1}, sourcemap: {instances: 1, capacity: 1}, aggregator: {instances: 1, capacity: 1}, indexer: {instances: 1, capacity: 1}}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_is_unavailable_and_every_accepted_span_is_written() {
    let gate = Arc::new(Gate::default());
    let mut s = TestServer::start_with(
        &[GRPC, "pipeline.queue_wait=300ms", ONE_SLOT_PIPELINE],
        Some(Arc::new(GatedFactory(Arc::clone(&gate)))),
        PipelineHooks::default(),
    );
    let ch = channel(&s).await;
    let mut accepted = 0u64;
    let mut refused = None;
    for i in 0..40u8 {
        let spans = (0..10)
            .map(|j| span(i.wrapping_mul(10).wrapping_add(j), 16))
            .collect();
        match export_traces(&ch, call(traces(spans), &[])).await {
            Ok(_) => accepted += 10,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("a blocked output fills the pipeline");
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unavailable, "queue is full")
    );
    *gate.open.lock() = true;
    gate.cv.notify_all();
    assert!(s.shutdown().await, "drained in time");
    assert_eq!(
        *gate.docs.lock(),
        accepted,
        "every accepted span was written"
    );
}

#[tokio::test]
async fn a_message_that_does_not_arrive_within_read_timeout_is_deadline_exceeded() {
    let mut s = start(&[TOKEN, "apm-server.read_timeout=1s"]);
    let addr = s.server.as_ref().and_then(|r| r.grpc_addr).expect("grpc");
    let (resp, mut stream) = open_raw_call(
        addr,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    )
    .await;
    // a gRPC frame announcing 100 bytes, of which only 10 are ever sent
    let mut frame = vec![0u8];
    frame.extend_from_slice(&100u32.to_be_bytes());
    frame.extend_from_slice(&[0u8; 10]);
    stream.send_data(frame.into(), false).expect("data");
    let t0 = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("answered before the test's timeout")
        .expect("response");
    let code = grpc_status(resp).await;
    assert_eq!(code, (Code::DeadlineExceeded as i32).to_string());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    assert!(s.shutdown().await);
    assert!(s.docs().is_empty());
}

#[tokio::test]
async fn a_call_in_flight_at_shutdown_finishes_and_its_span_is_indexed() {
    use prost::Message;
    let mut s = start(&[TOKEN]);
    let addr = s.server.as_ref().and_then(|r| r.grpc_addr).expect("grpc");
    let (resp, mut stream) = open_raw_call(
        addr,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    )
    .await;
    let mut first = frame(&traces(vec![span(1, 16)]).encode_to_vec());
    let rest = first.split_off(first.len() / 2);
    stream.send_data(first.into(), false).expect("first half");
    // give the server time to start the call before shutting down
    tokio::time::sleep(Duration::from_millis(200)).await;
    let finish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.send_data(rest.into(), true).expect("second half");
        let resp = resp.await.expect("response");
        let (parts, mut body) = resp.into_parts();
        assert_eq!(parts.status, 200);
        assert!(parts.headers.get("grpc-status").is_none(), "{parts:?}");
        while let Some(chunk) = body.data().await {
            chunk.expect("data");
        }
        let trailers = body.trailers().await.expect("trailers").expect("some");
        trailers["grpc-status"].to_str().expect("ascii").to_string()
    };
    let (drained, code) = tokio::join!(s.shutdown(), finish);
    assert_eq!(code, "0");
    assert!(drained);
    assert_eq!(s.docs().len(), 1);
}
