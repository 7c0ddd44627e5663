//! TODO

use super::context::{context, faas, links, otel, rum_context};
use super::fields::*;
use super::span::rum_span;
use super::*;
use crate::model::event::*;

pub(crate) fn transaction(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
    let mut ev = Event::new(meta, Body::Transaction(Box::default()));
    let mut tx = Transaction {
        span_id_from_id: true,
        ..Default::default()
    };
    if let Some(marks) = obj(o, "marks")? {
        for (g, gv) in marks.iter() {
            let m = match gv {
                V::Object(m) => m,
                V::Static(StaticNode::Null) => continue,
                _ => return Err(LineError::Decode("marks: expected object".into())),
            };
            let mut ms = Vec::new();
            for (k, v) in m.iter() {
                match v {
                    V::Static(StaticNode::I64(i)) => ms.push((k.to_string(), i as f64)),
                    V::Static(StaticNode::U64(i)) => ms.push((k.to_string(), i as f64)),
                    V::Static(StaticNode::F64(f)) => ms.push((k.to_string(), f)),
                    V::Static(StaticNode::Null) => {}
                    _ => return Err(LineError::Decode("marks: expected number".into())),
                }
            }
            if !ms.is_empty() {
                tx.marks.push((g.to_string(), ms));
            }
        }
    }
    if let Some(ts) = timestamp(o, "timestamp")? {
        ev.timestamp_ns = ts;
    }
    let ot = otel(o, &mut ev)?;
    tx.links = links(ctx, o)?;
    let trace_id = opt_str(o, "trace_id")?;
    ctx.max1024("trace_id", trace_id);
    ctx.required("trace_id", trace_id.is_some());
    let id = opt_str(o, "id")?;
    ctx.max1024("id", id);
    ctx.required("id", id.is_some());
    ev.parent_id = str_field(ctx, o, "parent_id")?;
    tx.name = str_field(ctx, o, "name")?;
    let ty = opt_str(o, "type")?;
    ctx.max1024("type", ty);
    ctx.required("type", ty.is_some());
    tx.result = str_field(ctx, o, "result")?;
    if let Some(a) = arr(o, "dropped_spans_stats")? {
        for v in a {
            let d = match v {
                V::Object(d) if d.values().any(is_set) => d,
                V::Object(_) | V::Static(StaticNode::Null) => {
                    ctx.fail(|| "dropped_spans_stats slice element required".into());
                    continue;
                }
                _ => {
                    return Err(LineError::Decode(
                        "dropped_spans_stats: expected object".into(),
                    ))
                }
            };
            ctx.push("dropped_spans_stats");
            str_field(ctx, d, "destination_service_resource")?;
            let t = opt_str(d, "service_target_type")?;
            ctx.max_len("service_target_type", t, 512);
            let n = opt_str(d, "service_target_name")?;
            ctx.max_len("service_target_name", n, 512);
            ctx.outcome(opt_str(d, "outcome")?);
            if let Some(du) = set_obj(d, "duration")? {
                ctx.push("duration");
                let c = int(du, "count")?;
                ctx.min("count", c.map(|c| c as f64), 1);
                if let Some(s) = set_obj(du, "sum")? {
                    ctx.push("sum");
                    let us = int(s, "us")?;
                    ctx.min("us", us.map(|c| c as f64), 0);
                    ctx.pop();
                }
                ctx.pop();
            }
            ctx.pop();
        }
    }
    let outcome = opt_str(o, "outcome")?;
    ctx.outcome(outcome);
    ev.faas = faas(o)?;
    if let Some(s) = set_obj(o, "session")? {
        ctx.push("session");
        let sid = opt_str(s, "id")?;
        ctx.max1024("id", sid);
        ctx.required("id", sid.is_some());
        let seq = int(s, "sequence")?;
        ctx.min("sequence", seq.map(|v| v as f64), 1);
        ctx.pop();
        tx.session_id = sid.unwrap_or_default().to_owned();
        tx.session_sequence = seq.unwrap_or(0);
    }
    ev.body = Body::Transaction(Box::new(tx));
    let (status, custom) = context(ctx, o, &mut ev)?;
    let Body::Transaction(mut tx) =
        std::mem::replace(&mut ev.body, Body::Transaction(Box::default()))
    else {
        return Err(LineError::Decode("internal".into()));
    };
    tx.custom = custom;
    if let Some(x) = set_obj(o, "experience")? {
        ctx.push("experience");
        let e = experience(x, ctx, "longtask")?;
        ctx.pop();
        tx.experience = Some(e);
    }
    match set_obj(o, "span_count")? {
        Some(sc) => {
            tx.span_count_dropped = int(sc, "dropped")?;
            tx.span_count_started = int(sc, "started")?;
            ctx.push("span_count");
            ctx.required("started", tx.span_count_started.is_some());
            ctx.pop();
        }
        None => ctx.required("span_count", false),
    }
    let sample_rate = num(o, "sample_rate")?;
    let duration = num(o, "duration")?;
    ctx.min("duration", duration, 0);
    ctx.required("duration", duration.is_some());
    tx.sampled = boolean(o, "sampled")?.unwrap_or(true);

    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    tx.id = id.unwrap_or_default().to_owned();
    tx.type_ = match ty {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => "unknown".into(),
    };
    tx.duration_ns = ms_to_ns(duration.unwrap_or(0.0));
    tx.representative_count = rep_count(sample_rate, true);
    tx.outcome = match outcome {
        Some(o) if !o.is_empty() => o.to_owned(),
        _ => match status {
            Some(s) if s >= 500 => "failure".into(),
            Some(_) => "success".into(),
            None => "unknown".into(),
        },
    };
    if let Some((kind, ids)) = ot {
        tx.profiler_stack_trace_ids = ids;
        tx.span_kind = if kind.is_empty() {
            match tx.type_.as_str() {
                "messaging" => "CONSUMER",
                "request" => "SERVER",
                _ => "INTERNAL",
            }
            .into()
        } else {
            kind
        };
        if status.is_none() {
            if tx.outcome == "unknown" {
                tx.outcome = "success".into();
            }
            if tx.result.is_empty() {
                tx.result = "Success".into();
            }
        }
    }
    ev.body = Body::Transaction(tx);
    Ok(ev)
}

/// `experience` (v3 `exp`): web vitals with the optional long-task summary
/// under `longtask_key` (v3 `lt`); the caller pushes the object's own key.
pub(crate) fn experience(x: Obj<'_>, ctx: &mut Ctx, longtask_key: &'static str) -> R<Experience> {
    let mut e = Experience {
        cls: num(x, "cls")?,
        fid: num(x, "fid")?,
        ..Default::default()
    };
    ctx.min("cls", e.cls, 0);
    ctx.min("fid", e.fid, 0);
    if let Some(l) = set_obj(x, longtask_key)? {
        ctx.push(longtask_key);
        let c = int(l, "count")?.map(|v| v as f64);
        ctx.min("count", c, 0);
        ctx.required("count", c.is_some());
        let mx = num(l, "max")?;
        ctx.min("max", mx, 0);
        ctx.required("max", mx.is_some());
        let sm = num(l, "sum")?;
        ctx.min("sum", sm, 0);
        ctx.required("sum", sm.is_some());
        ctx.pop();
        e.longtask = Some((c.unwrap_or(0.0), sm.unwrap_or(0.0), mx.unwrap_or(0.0)));
    }
    e.tbt = num(x, "tbt")?;
    ctx.min("tbt", e.tbt, 0);
    Ok(e)
}

pub(crate) const MARK_NAMES: &[(&str, &str)] = &[
    ("ce", "connectEnd"),
    ("cs", "connectStart"),
    ("dc", "domComplete"),
    ("de", "domContentLoadedEventEnd"),
    ("di", "domInteractive"),
    ("dl", "domLoading"),
    ("ds", "domContentLoadedEventStart"),
    ("ee", "loadEventEnd"),
    ("es", "loadEventStart"),
    ("fb", "timeToFirstByte"),
    ("fp", "firstContentfulPaint"),
    ("fs", "fetchStart"),
    ("le", "domainLookupEnd"),
    ("lp", "largestContentfulPaint"),
    ("ls", "domainLookupStart"),
    ("qs", "requestStart"),
    ("re", "responseEnd"),
    ("rs", "responseStart"),
];

pub(crate) fn expand_mark(k: &str) -> String {
    MARK_NAMES
        .iter()
        .find(|(s, _)| *s == k)
        .map(|(_, l)| (*l).to_owned())
        .unwrap_or_else(|| k.to_owned())
}

pub(crate) fn expand_group(k: &str) -> String {
    match k {
        "a" => "agent".into(),
        "nt" => "navigationTiming".into(),
        _ => k.to_owned(),
    }
}

pub(crate) fn rum_transaction(
    ctx: &mut Ctx,
    o: Obj<'_>,
    meta: &Metadata,
    out: &mut Vec<Event>,
) -> R<()> {
    let mut ev = Event::new(meta, Body::Transaction(Box::default()));
    let mut tx = Transaction::default();
    ev.body = Body::Transaction(Box::default());
    let (status, custom) = rum_context(ctx, o, &mut ev)?;
    tx.custom = custom;
    let duration = num(o, "d")?;
    ctx.min("d", duration, 0);
    ctx.required("d", duration.is_some());
    if let Some(x) = set_obj(o, "exp")? {
        ctx.push("exp");
        let e = experience(x, ctx, "lt")?;
        ctx.pop();
        tx.experience = Some(e);
    }
    let id = opt_str(o, "id")?;
    ctx.max1024("id", id);
    ctx.required("id", id.is_some());
    if let Some(k) = obj(o, "k")? {
        for (g, gv) in k.iter() {
            let m = match gv {
                V::Object(m) => m,
                V::Static(StaticNode::Null) => continue,
                _ => return Err(LineError::Decode("k: expected object".into())),
            };
            let mut ms = Vec::new();
            for (mk, v) in m.iter() {
                match v {
                    V::Static(StaticNode::Null) => {}
                    v => match v.cast_f64() {
                        Some(f) => ms.push((expand_mark(mk), f)),
                        None => return Err(LineError::Decode("k: expected number".into())),
                    },
                }
            }
            if !ms.is_empty() {
                tx.marks.push((expand_group(g), ms));
            }
        }
    }
    // metricsets
    let mut metricsets: Vec<Metricset> = Vec::new();
    if let Some(a) = arr(o, "me")? {
        for v in a {
            let me = match v {
                V::Object(me) if me.values().any(is_set) => me,
                V::Object(_) | V::Static(StaticNode::Null) => {
                    ctx.fail(|| "me slice element required".into());
                    continue;
                }
                _ => return Err(LineError::Decode("me: expected object".into())),
            };
            ctx.push("me");
            let mut ms = Metricset {
                has_refs: true,
                ..Default::default()
            };
            match set_obj(me, "sa")? {
                Some(sa) => {
                    ctx.push("sa");
                    if let Some(c) = set_obj(sa, "ysc")? {
                        ctx.push("ysc");
                        let v = num(c, "v")?;
                        ctx.required("v", v.is_some());
                        ms.self_time_count = v.map(|v| v as i64);
                        ctx.pop();
                    }
                    if let Some(c) = set_obj(sa, "yss")? {
                        ctx.push("yss");
                        let v = num(c, "v")?;
                        ctx.required("v", v.is_some());
                        ms.self_time_sum_us = v.map(|v| ((v * 1000.0) as i64) / 1000);
                        ctx.pop();
                    }
                    ctx.pop();
                }
                None => ctx.required("sa", false),
            }
            let y = set_obj(me, "y")?;
            if let Some(y) = y {
                ctx.push("y");
                ms.span_subtype = str_field(ctx, y, "su")?;
                ms.span_type = str_field(ctx, y, "t")?;
                ctx.pop();
            }
            ctx.pop();
            if y.is_some() && (ms.self_time_count.is_some() || ms.self_time_sum_us.is_some()) {
                metricsets.push(ms);
            }
        }
    }
    tx.name = str_field(ctx, o, "n")?;
    let outcome = opt_str(o, "o")?;
    ctx.outcome(outcome);
    ev.parent_id = str_field(ctx, o, "pid")?;
    tx.result = str_field(ctx, o, "rt")?;
    if let Some(s) = set_obj(o, "ses")? {
        ctx.push("ses");
        let sid = opt_str(s, "id")?;
        ctx.max1024("id", sid);
        ctx.required("id", sid.is_some());
        let seq = int(s, "seq")?;
        ctx.min("seq", seq.map(|v| v as f64), 1);
        ctx.pop();
        tx.session_id = sid.unwrap_or_default().to_owned();
        tx.session_sequence = seq.unwrap_or(0);
    }
    tx.sampled = boolean(o, "sm")?.unwrap_or(true);
    tx.representative_count = rep_count(num(o, "sr")?, true);
    let ty = opt_str(o, "t")?;
    ctx.max1024("t", ty);
    ctx.required("t", ty.is_some());
    let trace_id = opt_str(o, "tid")?;
    ctx.max1024("tid", trace_id);
    ctx.required("tid", trace_id.is_some());
    // spans
    let mut spans: Vec<(Event, Option<i64>)> = Vec::new();
    if let Some(a) = arr(o, "y")? {
        for v in a {
            let y = match v {
                V::Object(y) if y.values().any(is_set) => y,
                V::Object(_) | V::Static(StaticNode::Null) => {
                    ctx.fail(|| "y slice element required".into());
                    continue;
                }
                _ => return Err(LineError::Decode("y: expected object".into())),
            };
            ctx.push("y");
            let sp = rum_span(ctx, y, meta)?;
            ctx.pop();
            spans.push(sp);
        }
    }
    match set_obj(o, "yc")? {
        Some(yc) => {
            tx.span_count_dropped = int(yc, "dd")?;
            tx.span_count_started = int(yc, "sd")?;
            ctx.push("yc");
            ctx.required("sd", tx.span_count_started.is_some());
            ctx.pop();
        }
        None => ctx.required("yc", false),
    }
    if ctx.failed() {
        return Ok(());
    }
    tx.id = id.unwrap_or_default().to_owned();
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    tx.type_ = match ty {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => "unknown".into(),
    };
    tx.duration_ns = ms_to_ns(duration.unwrap_or(0.0));
    tx.outcome = match outcome {
        Some(o) if !o.is_empty() => o.to_owned(),
        _ => match status {
            Some(s) if s >= 500 => "failure".into(),
            Some(_) => "success".into(),
            None => "unknown".into(),
        },
    };
    let span_ids: Vec<String> = spans
        .iter()
        .map(|(e, _)| match &e.body {
            Body::Span(s) => s.id.clone(),
            _ => String::new(),
        })
        .collect();
    for ms in metricsets.iter_mut() {
        ms.transaction_name = tx.name.clone();
        ms.transaction_type = tx.type_.clone();
    }
    let (tx_id, trace) = (tx.id.clone(), ev.trace_id.clone());
    ev.body = Body::Transaction(Box::new(tx));
    let meta_ev = Event::new(meta, Body::Metricset(Box::default()));
    out.push(ev);
    for ms in metricsets {
        let mut m = meta_ev.clone();
        m.body = Body::Metricset(Box::new(ms));
        out.push(m);
    }
    for (mut sev, pi) in spans {
        sev.trace_id = trace.clone();
        if let Body::Span(s) = &mut sev.body {
            s.transaction_id = tx_id.clone();
        }
        sev.parent_id = match pi
            .and_then(|p| usize::try_from(p).ok())
            .and_then(|p| span_ids.get(p))
        {
            Some(pid) => pid.clone(),
            None => tx_id.clone(),
        };
        out.push(sev);
    }
    Ok(())
}
