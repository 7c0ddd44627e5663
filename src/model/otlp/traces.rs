//! Spans → transactions and spans; span events → errors (exception events)
//! and logs (the others).
//!
//! Invariants: a span without a parent, or of kind SERVER or CONSUMER, is a
//! transaction, every other span a span; a span with a trace or span id of
//! the wrong length is rejected alone; `duration` is never negative.

use super::super::event::{
    Body, ErrorEvent, Exception, Http, Labels, LogEvent, SharedStr, Span, Transaction, Url,
};
use super::super::{Event, RequestBase};
use super::{as_int, as_str, attrs, hex_id, merge_labels, resource, set_label, to_text, Rejected};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;

pub(crate) fn translate(
    m: ExportTraceServiceRequest,
    base: &RequestBase,
    out: &mut Vec<Event>,
    rejected: &mut Vec<Rejected>,
) {
    for rs in &m.resource_spans {
        for ss in &rs.scope_spans {
            let meta = resource::metadata(rs.resource.as_ref(), ss.scope.as_ref(), base);
            for s in &ss.spans {
                if let Err(r) = span(s, &meta, out) {
                    rejected.push(r);
                }
            }
        }
    }
}

/// What the attributes of one span say.
#[derive(Default)]
struct Facts {
    http_method: String,
    http_status: Option<i64>,
    url: String,
    db_system: String,
    db_statement: String,
    db_name: String,
    db_user: String,
    messaging_system: String,
    messaging_destination: String,
    rpc_system: String,
    peer_address: String,
    peer_port: Option<i64>,
    labels: Labels,
}

fn facts(s: &OtlpSpan) -> Facts {
    let mut f = Facts::default();
    for (k, v) in attrs(&s.attributes) {
        let st = || as_str(v).unwrap_or_default().to_owned();
        match k {
            "http.method" | "http.request.method" => f.http_method = st(),
            "http.status_code" | "http.response.status_code" => f.http_status = as_int(v),
            "http.url" | "url.full" => f.url = st(),
            "db.system" | "db.system.name" => f.db_system = st(),
            "db.statement" | "db.query.text" => f.db_statement = st(),
            "db.name" | "db.namespace" => f.db_name = st(),
            "db.user" => f.db_user = st(),
            "messaging.system" => f.messaging_system = st(),
            "messaging.destination" | "messaging.destination.name" => {
                f.messaging_destination = st()
            }
            "rpc.system" => f.rpc_system = st(),
            "net.peer.name" | "server.address" => f.peer_address = st(),
            "net.peer.port" | "server.port" => f.peer_port = as_int(v),
            _ => set_label(&mut f.labels, k, v),
        }
    }
    f
}

fn span(s: &OtlpSpan, meta: &super::super::Metadata, out: &mut Vec<Event>) -> Result<(), Rejected> {
    let trace_id = hex_id(&s.trace_id, 16, "trace_id")?;
    let id = hex_id(&s.span_id, 8, "span_id")?;
    let parent = hex_id(&s.parent_span_id, 8, "parent_span_id")?;
    let mut links = Vec::new();
    for l in &s.links {
        links.push((
            hex_id(&l.trace_id, 16, "link trace_id")?,
            hex_id(&l.span_id, 8, "link span_id")?,
        ));
    }
    let kind = SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified);
    let is_tx = parent.is_empty() || matches!(kind, SpanKind::Server | SpanKind::Consumer);
    let mut f = facts(s);
    let status = s
        .status
        .as_ref()
        .and_then(|st| StatusCode::try_from(st.code).ok())
        .unwrap_or(StatusCode::Unset);
    let http_failed = f
        .http_status
        .is_some_and(|c| if is_tx { c >= 500 } else { c >= 400 });
    let outcome = match status {
        StatusCode::Error => "failure",
        StatusCode::Ok => "success",
        StatusCode::Unset if http_failed => "failure",
        StatusCode::Unset => "success",
    };
    let duration_ns = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
    let duration_ns = i64::try_from(duration_ns).unwrap_or(i64::MAX);
    let body = if is_tx {
        let ty = if !f.messaging_system.is_empty() {
            "messaging"
        } else if !f.http_method.is_empty() || f.http_status.is_some() || !f.rpc_system.is_empty() {
            "request"
        } else {
            "unknown"
        };
        let result = match (f.http_status, status) {
            (Some(c), _) => format!("HTTP {}xx", c / 100),
            (None, StatusCode::Error) => "Error".into(),
            (None, StatusCode::Ok | StatusCode::Unset) => "Success".into(),
        };
        Body::Transaction(Box::new(Transaction {
            id: id.clone(),
            name: SharedStr::intern(&s.name),
            type_: SharedStr::intern(ty),
            result: SharedStr::intern(&result),
            outcome: SharedStr::intern(outcome),
            duration_ns,
            sampled: true,
            representative_count: Some(1.0),
            links,
            span_id_from_id: true,
            ..Default::default()
        }))
    } else {
        let mut sp = Span {
            id: id.clone(),
            name: SharedStr::intern(&s.name),
            duration_ns,
            outcome: SharedStr::intern(outcome),
            representative_count: Some(1.0),
            links,
            destination_address: SharedStr::intern(&f.peer_address),
            destination_port: f.peer_port,
            ..Default::default()
        };
        if !f.db_system.is_empty() {
            sp.type_ = SharedStr::intern("db");
            sp.subtype = SharedStr::intern(&f.db_system);
            sp.db_type = SharedStr::intern("sql");
            sp.db_instance = f.db_name.clone();
            sp.db_statement = f.db_statement.clone();
            sp.db_user = f.db_user.clone();
            sp.destination_service = Some((
                SharedStr::intern("db"),
                SharedStr::intern(&f.db_system),
                SharedStr::intern(&f.db_system),
            ));
        } else if !f.messaging_system.is_empty() {
            sp.type_ = SharedStr::intern("messaging");
            sp.subtype = SharedStr::intern(&f.messaging_system);
            sp.action = SharedStr::intern(if kind == SpanKind::Producer {
                "send"
            } else {
                "receive"
            });
        } else if !f.http_method.is_empty() || !f.url.is_empty() {
            sp.type_ = SharedStr::intern("external");
            sp.subtype = SharedStr::intern("http");
        } else if !f.rpc_system.is_empty() {
            sp.type_ = SharedStr::intern("external");
            sp.subtype = SharedStr::intern(&f.rpc_system);
        } else if kind == SpanKind::Internal {
            sp.type_ = SharedStr::intern("app");
            sp.subtype = SharedStr::intern("internal");
        } else {
            sp.type_ = SharedStr::intern("unknown");
        }
        Body::Span(Box::new(sp))
    };
    let mut ev = Event::new(meta, body);
    ev.timestamp_ns = i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX);
    ev.trace_id = trace_id.clone();
    ev.parent_id = parent;
    merge_labels(&mut ev, std::mem::take(&mut f.labels));
    if !f.http_method.is_empty() || f.http_status.is_some() {
        ev.http = Some(Box::new(Http {
            request_method: SharedStr::intern(&f.http_method),
            response_status_code: f.http_status,
            ..Default::default()
        }));
    }
    if !f.url.is_empty() {
        ev.url = Some(Box::new(Url {
            original: f.url.clone(),
            full: f.url.clone(),
            ..Default::default()
        }));
    }
    let parent = Parent {
        trace_id: &trace_id,
        span_id: &id,
        transaction: match &ev.body {
            Body::Transaction(t) => Some((t.type_.as_str(), t.sampled)),
            _ => None,
        },
        http: ev.http.as_deref(),
        url: ev.url.as_deref(),
    };
    for (i, e) in s.events.iter().enumerate() {
        out.push(span_event(meta, e, &parent, i));
    }
    out.push(ev);
    Ok(())
}

/// The span or transaction a span event belongs to.
struct Parent<'a> {
    trace_id: &'a str,
    span_id: &'a str,
    /// `(type, sampled)` when the parent is a transaction.
    transaction: Option<(&'a str, bool)>,
    /// The span's HTTP request/response and URL, copied to its errors.
    http: Option<&'a Http>,
    url: Option<&'a Url>,
}

/// One span event: an `exception` event with a type or message becomes an
/// error (its stack trace kept as text, the span's HTTP and URL fields
/// copied), any other a log (`event.kind:
/// event`, the name as message, its attributes as labels).
fn span_event(
    meta: &super::super::Metadata,
    e: &opentelemetry_proto::tonic::trace::v1::span::Event,
    parent: &Parent<'_>,
    index: usize,
) -> Event {
    let ts = i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX);
    let tx_id = if parent.transaction.is_some() {
        parent.span_id
    } else {
        ""
    };
    let mut labels = Labels::default();
    if e.name == "exception" {
        let mut x = Exception::default();
        let mut escaped = false;
        let mut stack_trace = String::new();
        for (k, v) in attrs(&e.attributes) {
            match k {
                "exception.type" => x.type_ = to_text(v),
                "exception.message" => x.message = to_text(v),
                "exception.stacktrace" => stack_trace = to_text(v),
                "exception.escaped" => {
                    escaped = matches!(
                        v.value,
                        Some(
                            opentelemetry_proto::tonic::common::v1::any_value::Value::BoolValue(
                                true
                            )
                        )
                    )
                }
                _ => set_label(&mut labels, k, v),
            }
        }
        if !x.type_.is_empty() || !x.message.is_empty() {
            if x.message.is_empty() {
                x.message = "[EMPTY]".into();
            }
            x.handled = Some(!escaped);
            let (transaction_type, sampled) = match parent.transaction {
                Some((ty, sampled)) => (ty.to_owned(), Some(sampled)),
                None => (String::new(), None),
            };
            let err = ErrorEvent {
                id: error_id(parent.span_id, ts, index),
                message: x.message.clone(),
                exceptions: vec![x],
                transaction_id: tx_id.to_owned(),
                transaction_type,
                transaction_sampled: sampled,
                span_id: tx_id.to_owned(),
                stack_trace,
                ..Default::default()
            };
            let mut ev = Event::new(meta, Body::Error(Box::new(err)));
            ev.timestamp_ns = ts;
            ev.trace_id = parent.trace_id.to_owned();
            ev.parent_id = parent.span_id.to_owned();
            ev.http = parent.http.map(|h| Box::new(h.clone()));
            ev.url = parent.url.map(|u| Box::new(u.clone()));
            merge_labels(&mut ev, labels);
            ev.update_grouping_key();
            return ev;
        }
        labels = Labels::default();
    }
    let log = LogEvent {
        message: e.name.clone(),
        span_id: parent.span_id.to_owned(),
        transaction_id: tx_id.to_owned(),
        ..Default::default()
    };
    for (k, v) in attrs(&e.attributes) {
        set_label(&mut labels, k, v);
    }
    let mut ev = Event::new(meta, Body::Log(Box::new(log)));
    merge_labels(&mut ev, labels);
    ev.timestamp_ns = ts;
    ev.trace_id = parent.trace_id.to_owned();
    ev
}

/// A stable 32-hex-digit id for an error derived from its span event.
fn error_id(span_id: &str, ts: i64, index: usize) -> String {
    use std::hash::{Hash, Hasher};
    let mut out = String::with_capacity(32);
    for salt in 0u8..2 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, span_id, ts, index).hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
