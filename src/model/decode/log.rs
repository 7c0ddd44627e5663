//! v2 log lines: ECS fields sent flat (`"log.level"`) or nested
//! (`{"log":{"level":…}}`), the nested form winning when well typed.
//!
//! Invariants: the v2 log has no fixed schema, so any set key makes its
//! root set; its 1024-character limits are reported under apm-server's
//! group names (`ecsloglogfields`, …).

use super::context::faas;
use super::fields::*;
use super::*;
use crate::model::event::*;

/// A log field sent flat (`"a.b"`) or nested (`{"a":{"b":…}}`); nested wins
/// when it has the right type.
pub(crate) fn log_str(o: Obj<'_>, flat: &str, nested: &[&str]) -> R<Option<String>> {
    let mut v = opt_str(o, flat)?.map(str::to_owned);
    if let Some(V::String(s)) = nested_val(o, nested) {
        v = Some(s.to_string());
    }
    Ok(v)
}

pub(crate) fn nested_val<'v>(o: Obj<'v>, path: &[&str]) -> Option<V<'v>> {
    let (last, init) = path.split_last()?;
    let mut cur = o;
    for p in init {
        match lookup(cur, p) {
            Some(V::Object(m)) => cur = m,
            _ => return None,
        }
    }
    lookup(cur, last)
}

pub(crate) fn log(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
    let mut ev = Event::new(meta, Body::Log(Box::default()));
    let mut lg = LogEvent::default();
    // nested objects must be objects when present
    for k in ["log", "service", "process", "event", "error"] {
        obj(o, k)?;
    }
    let mut lbl = None;
    labels(ctx, o, "labels", &mut lbl)?;
    merge_labels(&mut ev, lbl);
    if let Some(ts) = timestamp(o, "@timestamp")? {
        ev.timestamp_ns = ts;
    }
    let svc_name = log_str(o, "service.name", &["service", "name"])?;
    let svc_version = log_str(o, "service.version", &["service", "version"])?;
    let svc_env = log_str(o, "service.environment", &["service", "environment"])?;
    let svc_node = log_str(o, "service.node.name", &["service", "node", "name"])?;
    ctx.push("ecslogservicefields");
    ctx.max1024("service.name", svc_name.as_deref());
    ctx.max1024("service.version", svc_version.as_deref());
    ctx.max1024("service.environment", svc_env.as_deref());
    ctx.max1024("service.node.name", svc_node.as_deref());
    ctx.pop();
    lg.error_type = log_str(o, "error.type", &["error", "type"])?.unwrap_or_default();
    lg.error_message = log_str(o, "error.message", &["error", "message"])?.unwrap_or_default();
    lg.error_stack_trace =
        log_str(o, "error.stack_trace", &["error", "stack_trace"])?.unwrap_or_default();
    let dataset = log_str(o, "event.dataset", &["event", "dataset"])?;
    ctx.push("ecslogeventfields");
    ctx.max1024("event.dataset", dataset.as_deref());
    ctx.pop();
    lg.event_dataset = dataset.unwrap_or_default();
    let thread = log_str(o, "process.thread.name", &["process", "thread", "name"])?;
    ctx.push("ecslogprocessfields");
    ctx.max1024("process.thread.name", thread.as_deref());
    ctx.pop();
    lg.thread_name = thread.unwrap_or_default();
    let trace_id = opt_str(o, "trace.id")?;
    ctx.max1024("trace.id", trace_id);
    let tx_id = opt_str(o, "transaction.id")?;
    ctx.max1024("transaction.id", tx_id);
    let span_id = opt_str(o, "span.id")?;
    ctx.max1024("span.id", span_id);
    ev.faas = faas(o)?;
    let level = log_str(o, "log.level", &["log", "level"])?;
    let logger = log_str(o, "log.logger", &["log", "logger"])?;
    let file_name = log_str(
        o,
        "log.origin.file.name",
        &["log", "origin", "file", "name"],
    )?;
    ctx.push("ecsloglogfields");
    ctx.max1024("log.level", level.as_deref());
    ctx.max1024("log.logger", logger.as_deref());
    ctx.max1024("log.origin.file.name", file_name.as_deref());
    ctx.pop();
    lg.level = level.unwrap_or_default();
    lg.logger = logger.unwrap_or_default();
    lg.origin_file_name = file_name.unwrap_or_default();
    lg.origin_function =
        log_str(o, "log.origin.function", &["log", "origin", "function"])?.unwrap_or_default();
    lg.origin_file_line = int(o, "log.origin.file.line")?;
    match nested_val(o, &["log", "origin", "file", "line"]) {
        Some(V::Static(StaticNode::I64(i))) => lg.origin_file_line = Some(i),
        Some(V::Static(StaticNode::U64(i))) => lg.origin_file_line = Some(i as i64),
        Some(V::Static(StaticNode::F64(_))) => {
            return Err(LineError::Decode(
                "log.origin.file.line: expected integer".into(),
            ))
        }
        _ => {}
    }
    lg.message = string(o, "message")?;
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    lg.transaction_id = tx_id.unwrap_or_default().to_owned();
    lg.span_id = span_id
        .map(str::to_owned)
        .unwrap_or_else(|| lg.transaction_id.clone());
    if svc_name.is_some() || svc_version.is_some() || svc_env.is_some() || svc_node.is_some() {
        let sv = Service::make_mut(&mut ev.service);
        if let Some(v) = svc_name {
            sv.name = v;
        }
        if let Some(v) = svc_version {
            sv.version = v;
        }
        if let Some(v) = svc_env {
            sv.environment = v;
        }
        if let Some(v) = svc_node {
            sv.node_name = v;
        }
    }
    ev.body = Body::Log(Box::new(lg));
    Ok(ev)
}
