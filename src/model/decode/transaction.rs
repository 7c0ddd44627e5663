//! Transactions (v2 `transaction`, RUM v3 `x`): one set of field rules, run
//! in each dialect's order under that dialect's key names.
//!
//! Invariants: the first violation in the dialect's rule order is reported.
//! A v3 line also carries its spans (`y`) and breakdown metricsets (`me`):
//! it yields the transaction, then its metricsets, then its spans, all on
//! the transaction's trace; nothing is yielded when any rule failed.

use super::context::{context, faas, links, otel, rum_context};
use super::fields::*;
use super::span::{self, span};
use super::*;
use crate::model::event::*;

/// The field rules of a transaction; each dialect lists them in its order.
/// Rules a dialect lacks are simply not in its list.
#[derive(Clone, Copy)]
pub(crate) enum TransactionRule {
    Marks,
    Timestamp,
    Otel,
    Links,
    TraceId,
    Id,
    ParentId,
    Name,
    Type,
    Result,
    DroppedSpansStats,
    Outcome,
    Faas,
    Session,
    Context,
    Experience,
    SpanCount,
    SampleRate,
    Duration,
    Sampled,
    /// v3 `me`: breakdown metricsets sent with the transaction.
    Metricsets,
    /// v3 `y`: spans sent with the transaction.
    Spans,
}

type ContextRule = fn(&mut Ctx, Obj<'_>, &mut Event) -> R<(Option<i64>, Option<Json>)>;

/// One dialect's key names and rule order for transactions.
pub(crate) struct TransactionDialect {
    pub order: &'static [TransactionRule],
    pub marks: &'static str,
    pub mark_name: fn(&str) -> String,
    pub mark_group: fn(&str) -> String,
    pub trace_id: &'static str,
    pub id: &'static str,
    pub parent_id: &'static str,
    pub name: &'static str,
    pub type_: &'static str,
    pub result: &'static str,
    pub outcome: &'static str,
    pub session: &'static str,
    pub session_sequence: &'static str,
    pub context: ContextRule,
    pub experience: &'static str,
    pub longtask: &'static str,
    pub span_count: &'static str,
    pub span_count_dropped: &'static str,
    pub span_count_started: &'static str,
    pub sample_rate: &'static str,
    pub duration: &'static str,
    pub sampled: &'static str,
    /// v2 transactions also write their id as `span.id`.
    pub span_id_from_id: bool,
}

/// Intake v2 (`{"transaction": …}`).
pub(crate) const V2: TransactionDialect = TransactionDialect {
    order: &[
        TransactionRule::Marks,
        TransactionRule::Timestamp,
        TransactionRule::Otel,
        TransactionRule::Links,
        TransactionRule::TraceId,
        TransactionRule::Id,
        TransactionRule::ParentId,
        TransactionRule::Name,
        TransactionRule::Type,
        TransactionRule::Result,
        TransactionRule::DroppedSpansStats,
        TransactionRule::Outcome,
        TransactionRule::Faas,
        TransactionRule::Session,
        TransactionRule::Context,
        TransactionRule::Experience,
        TransactionRule::SpanCount,
        TransactionRule::SampleRate,
        TransactionRule::Duration,
        TransactionRule::Sampled,
    ],
    marks: "marks",
    mark_name: str::to_owned,
    mark_group: str::to_owned,
    trace_id: "trace_id",
    id: "id",
    parent_id: "parent_id",
    name: "name",
    type_: "type",
    result: "result",
    outcome: "outcome",
    session: "session",
    session_sequence: "sequence",
    context,
    experience: "experience",
    longtask: "longtask",
    span_count: "span_count",
    span_count_dropped: "dropped",
    span_count_started: "started",
    sample_rate: "sample_rate",
    duration: "duration",
    sampled: "sampled",
    span_id_from_id: true,
};

/// RUM v3 (`{"x": …}`): the same rules under the short keys, plus the
/// nested spans and metricsets.
pub(crate) const V3: TransactionDialect = TransactionDialect {
    order: &[
        TransactionRule::Context,
        TransactionRule::Duration,
        TransactionRule::Experience,
        TransactionRule::Id,
        TransactionRule::Marks,
        TransactionRule::Metricsets,
        TransactionRule::Name,
        TransactionRule::Outcome,
        TransactionRule::ParentId,
        TransactionRule::Result,
        TransactionRule::Session,
        TransactionRule::Sampled,
        TransactionRule::SampleRate,
        TransactionRule::Type,
        TransactionRule::TraceId,
        TransactionRule::Spans,
        TransactionRule::SpanCount,
    ],
    marks: "k",
    mark_name: expand_mark,
    mark_group: expand_group,
    trace_id: "tid",
    id: "id",
    parent_id: "pid",
    name: "n",
    type_: "t",
    result: "rt",
    outcome: "o",
    session: "ses",
    session_sequence: "seq",
    context: rum_context,
    experience: "exp",
    longtask: "lt",
    span_count: "yc",
    span_count_dropped: "dd",
    span_count_started: "sd",
    sample_rate: "sr",
    duration: "d",
    sampled: "sm",
    span_id_from_id: false,
};

/// A required string of at most 1024 characters.
fn required_str<'v>(ctx: &mut Ctx, o: Obj<'v>, k: &str) -> R<Option<&'v str>> {
    let v = opt_str(o, k)?;
    ctx.max1024(k, v);
    ctx.required(k, v.is_some());
    Ok(v)
}

/// `marks`: groups of named numbers (v3 names are expanded).
fn marks(o: Obj<'_>, d: &TransactionDialect, tx: &mut Transaction) -> R<()> {
    let Some(marks) = obj(o, d.marks)? else {
        return Ok(());
    };
    for (g, gv) in marks.iter() {
        let m = match gv {
            V::Object(m) => m,
            V::Static(StaticNode::Null) => continue,
            _ => return Err(LineError::Decode(format!("{}: expected object", d.marks))),
        };
        let mut ms = Vec::new();
        for (k, v) in m.iter() {
            match v {
                V::Static(StaticNode::Null) => {}
                v => match v.cast_f64() {
                    Some(f) => ms.push(((d.mark_name)(k), f)),
                    None => return Err(LineError::Decode(format!("{}: expected number", d.marks))),
                },
            }
        }
        if !ms.is_empty() {
            tx.marks.push(((d.mark_group)(g), ms));
        }
    }
    Ok(())
}

/// v2 `dropped_spans_stats`: validated and kept for server-side
/// aggregation (apm-server does not index them).
fn dropped_spans_stats(ctx: &mut Ctx, o: Obj<'_>) -> R<Vec<DroppedSpanStats>> {
    let mut out = Vec::new();
    let Some(a) = arr(o, "dropped_spans_stats")? else {
        return Ok(out);
    };
    for v in a {
        let Some(d) = set_element(ctx, "dropped_spans_stats", v)? else {
            continue;
        };
        ctx.push("dropped_spans_stats");
        let mut stats = DroppedSpanStats {
            destination_service_resource: str_field(ctx, d, "destination_service_resource")?,
            ..Default::default()
        };
        let t = opt_str(d, "service_target_type")?;
        ctx.max_len("service_target_type", t, 512);
        let n = opt_str(d, "service_target_name")?;
        ctx.max_len("service_target_name", n, 512);
        let outcome = opt_str(d, "outcome")?;
        ctx.outcome(outcome);
        stats.service_target_type = t.unwrap_or_default().to_owned();
        stats.service_target_name = n.unwrap_or_default().to_owned();
        stats.outcome = outcome.unwrap_or_default().to_owned();
        if let Some(du) = set_obj(d, "duration")? {
            ctx.push("duration");
            let c = int(du, "count")?;
            ctx.min("count", c.map(|c| c as f64), 1);
            stats.count = c.unwrap_or(0);
            if let Some(s) = set_obj(du, "sum")? {
                ctx.push("sum");
                let us = int(s, "us")?;
                ctx.min("us", us.map(|c| c as f64), 0);
                stats.sum_us = us.unwrap_or(0);
                ctx.pop();
            }
            ctx.pop();
        }
        out.push(stats);
        ctx.pop();
    }
    Ok(out)
}

/// v3 `me`: span self-time breakdowns. Kept only with a span reference and a
/// count or sum.
fn rum_metricsets(ctx: &mut Ctx, o: Obj<'_>, out: &mut Vec<Metricset>) -> R<()> {
    let Some(a) = arr(o, "me")? else {
        return Ok(());
    };
    for v in a {
        let Some(me) = set_element(ctx, "me", v)? else {
            continue;
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
            out.push(ms);
        }
    }
    Ok(())
}

/// Decodes one transaction line's root object in dialect `d` and appends
/// the transaction (then any v3 metricsets and spans) to `out`.
pub(crate) fn transaction(
    ctx: &mut Ctx,
    d: &TransactionDialect,
    o: Obj<'_>,
    meta: &Metadata,
    out: &mut Vec<Event>,
) -> R<()> {
    let mut ev = Event::new(meta, Body::Transaction(Box::default()));
    let mut tx = Box::new(Transaction {
        span_id_from_id: d.span_id_from_id,
        ..Default::default()
    });
    let (mut trace_id, mut id, mut ty, mut outcome) = (None, None, None, None);
    let (mut status, mut sample_rate, mut duration, mut ot) = (None, None, None, None);
    let mut metricsets: Vec<Metricset> = Vec::new();
    let mut spans: Vec<(Event, Option<i64>)> = Vec::new();
    for rule in d.order {
        match rule {
            TransactionRule::Marks => marks(o, d, &mut tx)?,
            TransactionRule::Timestamp => {
                if let Some(ts) = timestamp(o, "timestamp")? {
                    ev.timestamp_ns = ts;
                }
            }
            TransactionRule::Otel => ot = otel(o, &mut ev)?,
            TransactionRule::Links => tx.links = links(ctx, o)?,
            TransactionRule::TraceId => trace_id = required_str(ctx, o, d.trace_id)?,
            TransactionRule::Id => id = required_str(ctx, o, d.id)?,
            TransactionRule::ParentId => ev.parent_id = str_field(ctx, o, d.parent_id)?,
            TransactionRule::Name => tx.name = shared_field(ctx, o, d.name)?,
            TransactionRule::Type => ty = required_str(ctx, o, d.type_)?,
            TransactionRule::Result => tx.result = shared_field(ctx, o, d.result)?,
            TransactionRule::DroppedSpansStats => {
                tx.dropped_spans_stats = dropped_spans_stats(ctx, o)?
            }
            TransactionRule::Outcome => {
                outcome = opt_str(o, d.outcome)?;
                ctx.outcome(outcome);
            }
            TransactionRule::Faas => ev.faas = faas(o)?,
            TransactionRule::Session => {
                if let Some(s) = set_obj(o, d.session)? {
                    ctx.push(d.session);
                    let sid = required_str(ctx, s, "id")?;
                    let seq = int(s, d.session_sequence)?;
                    ctx.min(d.session_sequence, seq.map(|v| v as f64), 1);
                    ctx.pop();
                    tx.session_id = sid.unwrap_or_default().to_owned();
                    tx.session_sequence = seq.unwrap_or(0);
                }
            }
            TransactionRule::Context => {
                // the context may write transaction fields (message, cloud origin)
                ev.body = Body::Transaction(tx);
                let (st, custom) = (d.context)(ctx, o, &mut ev)?;
                let body = std::mem::replace(&mut ev.body, Body::Transaction(Box::default()));
                let Body::Transaction(t) = body else {
                    return Err(LineError::Decode("internal".into()));
                };
                tx = t;
                tx.custom = custom;
                status = st;
            }
            TransactionRule::Experience => {
                if let Some(x) = set_obj(o, d.experience)? {
                    ctx.push(d.experience);
                    tx.experience = Some(experience(x, ctx, d.longtask)?);
                    ctx.pop();
                }
            }
            TransactionRule::SpanCount => match set_obj(o, d.span_count)? {
                Some(sc) => {
                    tx.span_count_dropped = int(sc, d.span_count_dropped)?;
                    tx.span_count_started = int(sc, d.span_count_started)?;
                    ctx.push(d.span_count);
                    ctx.required(d.span_count_started, tx.span_count_started.is_some());
                    ctx.pop();
                }
                None => ctx.required(d.span_count, false),
            },
            TransactionRule::SampleRate => sample_rate = num(o, d.sample_rate)?,
            TransactionRule::Duration => {
                duration = num(o, d.duration)?;
                ctx.min(d.duration, duration, 0);
                ctx.required(d.duration, duration.is_some());
            }
            TransactionRule::Sampled => tx.sampled = boolean(o, d.sampled)?.unwrap_or(true),
            TransactionRule::Metricsets => rum_metricsets(ctx, o, &mut metricsets)?,
            TransactionRule::Spans => {
                if let Some(a) = arr(o, "y")? {
                    for v in a {
                        let Some(y) = set_element(ctx, "y", v)? else {
                            continue;
                        };
                        ctx.push("y");
                        spans.push(span(ctx, &span::V3, y, meta)?);
                        ctx.pop();
                    }
                }
            }
        }
    }
    if ctx.failed() {
        return Ok(());
    }
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    tx.id = id.unwrap_or_default().to_owned();
    tx.type_ = SharedStr::intern(match ty {
        Some(t) if !t.is_empty() => t,
        _ => "unknown",
    });
    tx.duration_ns = ms_to_ns(duration.unwrap_or(0.0));
    tx.representative_count = rep_count(sample_rate, true);
    tx.outcome = SharedStr::intern(match outcome {
        Some(o) if !o.is_empty() => o,
        _ => match status {
            Some(s) if s >= 500 => "failure",
            Some(_) => "success",
            None => "unknown",
        },
    });
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
    for ms in metricsets.iter_mut() {
        ms.transaction_name = tx.name.to_string();
        ms.transaction_type = tx.type_.to_string();
    }
    let (tx_id, trace) = (tx.id.clone(), ev.trace_id.clone());
    ev.body = Body::Transaction(tx);
    out.push(ev);
    if !metricsets.is_empty() {
        let meta_ev = Event::new(meta, Body::Metricset(Box::default()));
        for ms in metricsets {
            let mut m = meta_ev.clone();
            m.body = Body::Metricset(Box::new(ms));
            out.push(m);
        }
    }
    if spans.is_empty() {
        return Ok(());
    }
    // a span's `pi` is the index of its parent span; none: the transaction
    let span_ids: Vec<String> = spans
        .iter()
        .map(|(e, _)| match &e.body {
            Body::Span(s) => s.id.clone(),
            _ => String::new(),
        })
        .collect();
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

/// RUM v3 navigation-timing mark names and what they stand for.
const MARK_NAMES: &[(&str, &str)] = &[
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

/// A v3 mark name in full.
fn expand_mark(k: &str) -> String {
    MARK_NAMES
        .iter()
        .find(|(s, _)| *s == k)
        .map(|(_, l)| (*l).to_owned())
        .unwrap_or_else(|| k.to_owned())
}

/// A v3 mark group name in full.
fn expand_group(k: &str) -> String {
    match k {
        "a" => "agent".into(),
        "nt" => "navigationTiming".into(),
        _ => k.to_owned(),
    }
}
