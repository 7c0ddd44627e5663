//! OTLP over HTTP and over gRPC through the real server, side by side: the
//! same gzip-compressed `ExportTraceServiceRequest` of 100 server spans (100
//! transactions) from 8 concurrent clients, into a counting in-memory
//! output; each measured batch ends when the output has seen every event,
//! so the transport, the decoder stage and the indexer are all inside the
//! measured time. Throughput is in events.

mod common;

use apm_rs::server::ServerBuilder;
use common::{Counter, CountingFactory};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::write::GzEncoder;
use flate2::Compression;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codec::CompressionEncoding;

const SPANS_PER_REQUEST: usize = 100;
const CLIENTS: u64 = 8;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn request() -> ExportTraceServiceRequest {
    let spans = (0..SPANS_PER_REQUEST as u64)
        .map(|i| Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            name: "GET /checkout".into(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i,
            end_time_unix_nano: 1_700_000_000_100_000_000 + i,
            attributes: vec![
                kv("http.request.method", "GET"),
                kv("url.full", "http://shop.example/checkout"),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "bench"),
                    kv("telemetry.sdk.language", "rust"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Runs `iters` exports spread over the clients, then waits for the output.
fn measure<F, Fut>(rt: &tokio::runtime::Runtime, counter: &Counter, iters: u64, send: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let before = counter.docs();
    let t0 = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS).map(|k| tokio::spawn(send(k))).collect();
        for t in tasks {
            t.await.expect("client task");
        }
    });
    counter.wait_for(before + iters * SPANS_PER_REQUEST as u64);
    t0.elapsed()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = apm_rs::config::from_overrides([
        "apm-server.host=127.0.0.1:0".to_string(),
        "apm-server.otlp.grpc.host=127.0.0.1:0".to_string(),
        format!("output.file.path={}", dir.path().display()),
    ])
    .expect("config");
    let counter = Arc::new(Counter::default());
    let server = ServerBuilder::new(cfg)
        .output(Arc::new(CountingFactory(Arc::clone(&counter))))
        .spawn()
        .expect("server starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let message = request();
    let mut gz = GzEncoder::new(Vec::new(), Compression::new(6));
    gz.write_all(&message.encode_to_vec()).expect("gzip");
    let body = bytes::Bytes::from(gz.finish().expect("gzip"));

    let mut g = c.benchmark_group("otlp_transport");
    g.throughput(Throughput::Elements(SPANS_PER_REQUEST as u64));

    let url = format!("http://{}/v1/traces", server.addr);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    g.bench_function("http_protobuf_gzip_100_spans_per_request", |b| {
        b.iter_custom(|iters| {
            measure(&rt, &counter, iters, |k| {
                let (http, url, body) = (http.clone(), url.clone(), body.clone());
                async move {
                    let mut i = k;
                    while i < iters {
                        let r = http
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .header("content-encoding", "gzip")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("request");
                        assert_eq!(r.status().as_u16(), 200);
                        i += CLIENTS;
                    }
                }
            })
        })
    });

    let grpc_addr = server.grpc_addr.expect("gRPC listener");
    let channels: Vec<_> = rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..CLIENTS {
            out.push(
                tonic::transport::Endpoint::from_shared(format!("http://{grpc_addr}"))
                    .expect("endpoint")
                    .connect()
                    .await
                    .expect("connect"),
            );
        }
        out
    });
    g.bench_function("grpc_gzip_100_spans_per_request", |b| {
        b.iter_custom(|iters| {
            measure(&rt, &counter, iters, |k| {
                let (ch, message) = (channels[k as usize].clone(), message.clone());
                async move {
                    let mut client =
                        TraceServiceClient::new(ch).send_compressed(CompressionEncoding::Gzip);
                    let mut i = k;
                    while i < iters {
                        client.export(message.clone()).await.expect("export");
                        i += CLIENTS;
                    }
                }
            })
        })
    });
    g.finish();
    server.shutdown();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
