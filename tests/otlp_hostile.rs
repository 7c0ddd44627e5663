//! Hostile OTLP/HTTP input against the real server: each gets its OTLP
//! error (status + `google.rpc.Status`, or a partial success) and nothing
//! else in the message is lost; the server keeps serving afterwards.

mod common;

use apm_rs::http::otlp::RpcStatus;
use common::TestServer;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn span(id: u8) -> Span {
    Span {
        trace_id: vec![5; 16],
        span_id: vec![id; 8],
        name: format!("op {id}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_001_000,
        ..Default::default()
    }
}

fn traces(service: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn export(url: &str, body: Vec<u8>) -> (u16, bytes::Bytes) {
    let r = common::client()
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.bytes().await.expect("body"))
}

fn invalid_argument(status: u16, body: bytes::Bytes) -> String {
    assert_eq!(status, 400);
    let st = RpcStatus::decode(body).expect("google.rpc.Status");
    assert_eq!(st.code, 3, "{}", st.message);
    st.message
}

#[tokio::test]
async fn invalid_utf8_in_a_string_is_invalid_argument() {
    let s = TestServer::start(&[]);
    let mut body = traces("ZZZZ", vec![span(1)]);
    let at = body
        .windows(4)
        .position(|w| w == b"ZZZZ")
        .expect("name bytes");
    body[at..at + 4].copy_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
    let (status, b) = export(&s.url, body).await;
    let msg = invalid_argument(status, b);
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[tokio::test]
async fn anyvalue_nested_past_the_decoder_limit_is_invalid_argument_and_shallower_nesting_is_kept()
{
    let mut s = TestServer::start(&[]);
    let nest = |levels: usize| {
        let v = (0..levels).fold(
            AnyValue {
                value: Some(Value::StringValue("x".into())),
            },
            |inner, _| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![inner],
                })),
            },
        );
        let mut sp = span(1);
        sp.attributes.push(KeyValue {
            key: "deep".into(),
            value: Some(v),
            ..Default::default()
        });
        traces("nest", vec![sp])
    };
    let (status, b) = export(&s.url, nest(500)).await;
    invalid_argument(status, b);
    let (status, _) = export(&s.url, nest(20)).await;
    assert_eq!(status, 200);
    assert!(s.shutdown().await);
    assert_eq!(s.docs().len(), 1);
}

#[tokio::test]
async fn unknown_enum_values_and_wrong_length_ids_lose_nothing_else() {
    let mut s = TestServer::start(&[]);
    let mut odd_kind = span(1);
    odd_kind.kind = 99;
    odd_kind.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
        code: 42,
        ..Default::default()
    });
    let mut short_span_id = span(2);
    short_span_id.span_id = vec![2; 3];
    let mut long_parent = span(3);
    long_parent.parent_span_id = vec![3; 20];
    let body = traces("enums", vec![odd_kind, short_span_id, long_parent, span(4)]);
    let (status, b) = export(&s.url, body).await;
    assert_eq!(status, 200);
    let resp = ExportTraceServiceResponse::decode(b).expect("response");
    assert_eq!(resp.partial_success.expect("partial").rejected_spans, 2);
    assert!(s.shutdown().await);
    let docs = s.docs();
    let mut ids: Vec<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["transaction"]["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["0101010101010101", "0404040404040404"]);
}

#[tokio::test]
async fn a_100_mb_message_is_refused_and_the_server_keeps_serving() {
    let s = TestServer::start(&[]);
    let huge = vec![0x0a; 100 * 1024 * 1024];
    let r = common::client()
        .post(format!("{}/v1/traces", s.url))
        .header("content-type", "application/x-protobuf")
        .body(huge)
        .send()
        .await;
    // The server answers 413 as soon as the limit is passed; the client may
    // see that answer or a reset while it is still sending.
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }
    let (status, _) = export(&s.url, traces("after", vec![span(9)])).await;
    assert_eq!(status, 200);
}
