//! Log records → log events (or error events when they carry exception
//! attributes), with trace context, severity and attributes as labels.
//!
//! Invariants: `@timestamp` is the record's time, else its observed time,
//! else the request's; `log.level` is the severity text and
//! `event.severity` the severity number, as apm-data keeps them; a record
//! with an id of the wrong length is rejected alone.

use super::super::event::{Body, Labels, LogEvent};
use super::super::{Event, RequestBase};
use super::{attrs, hex_id, merge_labels, resource, set_label, to_text, Rejected};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

pub(crate) fn translate(
    m: ExportLogsServiceRequest,
    base: &RequestBase,
    out: &mut Vec<Event>,
    rejected: &mut Vec<Rejected>,
) {
    for rl in &m.resource_logs {
        for sl in &rl.scope_logs {
            let meta = resource::metadata(rl.resource.as_ref(), sl.scope.as_ref(), base);
            for r in &sl.log_records {
                match record(r, &meta) {
                    Ok(ev) => out.push(ev),
                    Err(e) => rejected.push(e),
                }
            }
        }
    }
}

fn record(r: &LogRecord, meta: &super::super::Metadata) -> Result<Event, Rejected> {
    let trace_id = hex_id(&r.trace_id, 16, "trace_id")?;
    let span_id = hex_id(&r.span_id, 8, "span_id")?;
    let mut log = LogEvent {
        message: r.body.as_ref().map(to_text).unwrap_or_default(),
        level: r.severity_text.clone(),
        span_id,
        otlp_severity: (r.severity_number > 0).then_some(i64::from(r.severity_number)),
        ..Default::default()
    };
    let mut labels = Labels::default();
    for (k, v) in attrs(&r.attributes) {
        match k {
            "exception.type" => log.error_type = to_text(v),
            "exception.message" => log.error_message = to_text(v),
            "exception.stacktrace" => log.error_stack_trace = to_text(v),
            _ => set_label(&mut labels, k, v),
        }
    }
    let mut ev = Event::new(meta, Body::Log(Box::new(log)));
    let ts = if r.time_unix_nano != 0 {
        r.time_unix_nano
    } else {
        r.observed_time_unix_nano
    };
    if ts != 0 {
        ev.timestamp_ns = i64::try_from(ts).unwrap_or(i64::MAX);
    }
    ev.trace_id = trace_id;
    merge_labels(&mut ev, labels);
    Ok(ev)
}
