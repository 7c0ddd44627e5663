//! Spans (v2 `span`, RUM v3 `y` inside a transaction): one set of field
//! rules, run in each dialect's order under that dialect's key names; the
//! span `context` differs in shape between the dialects and has one rule
//! each.
//!
//! Invariants: the first violation in the dialect's rule order is reported.
//! A span without `timestamp` starts at the request time plus `start` ms.

use super::context::{context_service, links, message_ctx, otel, service_target_derive};
use super::fields::*;
use super::stacktrace::{frames, rum_frames};
use super::*;
use crate::model::event::*;

/// The field rules of a span; each dialect lists them in its order.
#[derive(Clone, Copy)]
pub(crate) enum SpanRule {
    /// v2: `timestamp` and `start`, one of them required.
    TimestampOrStart,
    /// v3: `s`, required.
    Start,
    Otel,
    Id,
    TraceId,
    Action,
    Name,
    Outcome,
    ChildIds,
    ParentId,
    /// v3 `pi`: index of the parent span within the transaction.
    ParentIndex,
    Links,
    Stacktrace,
    Type,
    Subtype,
    TransactionId,
    Composite,
    Context,
    Duration,
    SampleRate,
    Sync,
}

/// What the span context tells the rules after it.
#[derive(Default)]
pub(crate) struct SpanContext {
    http_status: Option<i64>,
    target_type_sent: bool,
    resource: Option<String>,
}

type FramesRule = fn(&mut Ctx, Obj<'_>, &'static str) -> R<Vec<Frame>>;
type SpanContextRule = fn(&mut Ctx, Obj<'_>, &mut Event, &mut Span) -> R<SpanContext>;

/// One dialect's key names and rule order for spans.
pub(crate) struct SpanDialect {
    pub order: &'static [SpanRule],
    pub start: &'static str,
    pub id: &'static str,
    pub action: &'static str,
    pub name: &'static str,
    pub outcome: &'static str,
    pub stacktrace: &'static str,
    pub type_: &'static str,
    pub subtype: &'static str,
    pub duration: &'static str,
    pub sample_rate: &'static str,
    pub sync: &'static str,
    pub frames: FramesRule,
    pub context: SpanContextRule,
    /// Without a sample rate, v2 spans count once; v3 spans stay uncounted.
    pub count_without_sample_rate: bool,
}

/// Intake v2 (`{"span": …}`).
pub(crate) const V2: SpanDialect = SpanDialect {
    order: &[
        SpanRule::TimestampOrStart,
        SpanRule::Otel,
        SpanRule::Id,
        SpanRule::TraceId,
        SpanRule::Action,
        SpanRule::Name,
        SpanRule::Outcome,
        SpanRule::ChildIds,
        SpanRule::ParentId,
        SpanRule::Links,
        SpanRule::Stacktrace,
        SpanRule::Type,
        SpanRule::Subtype,
        SpanRule::TransactionId,
        SpanRule::Composite,
        SpanRule::Context,
        SpanRule::Duration,
        SpanRule::SampleRate,
        SpanRule::Sync,
    ],
    start: "start",
    id: "id",
    action: "action",
    name: "name",
    outcome: "outcome",
    stacktrace: "stacktrace",
    type_: "type",
    subtype: "subtype",
    duration: "duration",
    sample_rate: "sample_rate",
    sync: "sync",
    frames,
    context: span_context,
    count_without_sample_rate: true,
};

/// RUM v3 (`y` elements of an `x` line).
pub(crate) const V3: SpanDialect = SpanDialect {
    order: &[
        SpanRule::Action,
        SpanRule::Context,
        SpanRule::Duration,
        SpanRule::Id,
        SpanRule::Name,
        SpanRule::Outcome,
        SpanRule::ParentIndex,
        SpanRule::Start,
        SpanRule::SampleRate,
        SpanRule::Stacktrace,
        SpanRule::Subtype,
        SpanRule::Sync,
        SpanRule::Type,
    ],
    start: "s",
    id: "id",
    action: "ac",
    name: "n",
    outcome: "o",
    stacktrace: "st",
    type_: "t",
    subtype: "su",
    duration: "d",
    sample_rate: "sr",
    sync: "sy",
    frames: rum_frames,
    context: rum_span_context,
    count_without_sample_rate: false,
};

/// A string of at most 1024 characters, required when `required`.
fn short_str<'v>(ctx: &mut Ctx, o: Obj<'v>, k: &str, required: bool) -> R<Option<&'v str>> {
    let v = opt_str(o, k)?;
    ctx.max1024(k, v);
    if required {
        ctx.required(k, v.is_some());
    }
    Ok(v)
}

/// Decodes one span object in dialect `d`; also returns the v3 parent index.
pub(crate) fn span(
    ctx: &mut Ctx,
    d: &SpanDialect,
    o: Obj<'_>,
    meta: &Metadata,
) -> R<(Event, Option<i64>)> {
    let mut ev = Event::new(meta, Body::Span(Box::default()));
    let mut sp = Span::default();
    let (mut ts, mut start, mut ot, mut parent_index) = (None, None, None, None);
    let (mut id, mut trace_id, mut action, mut name) = (None, None, None, None);
    let (mut outcome, mut parent_id, mut ty, mut subtype) = (None, None, None, None);
    let mut duration = None;
    let mut sc = SpanContext::default();
    for rule in d.order {
        match rule {
            SpanRule::TimestampOrStart => {
                ts = timestamp(o, "timestamp")?;
                start = num(o, d.start)?;
                if ts.is_none() && start.is_none() {
                    ctx.fail(|| {
                        format!(
                            "requires at least one of the fields '{};timestamp'",
                            d.start
                        )
                    });
                }
            }
            SpanRule::Start => {
                start = num(o, d.start)?;
                ctx.required(d.start, start.is_some());
            }
            SpanRule::Otel => ot = otel(o, &mut ev)?,
            SpanRule::Id => id = short_str(ctx, o, d.id, true)?,
            SpanRule::TraceId => trace_id = short_str(ctx, o, "trace_id", true)?,
            SpanRule::Action => action = short_str(ctx, o, d.action, false)?,
            SpanRule::Name => name = short_str(ctx, o, d.name, true)?,
            SpanRule::Outcome => {
                outcome = opt_str(o, d.outcome)?;
                ctx.outcome(outcome);
            }
            SpanRule::ChildIds => {
                sp.child_ids = str_arr(o, "child_ids")?;
                for c in &sp.child_ids {
                    ctx.max1024("child_ids", Some(c));
                }
            }
            SpanRule::ParentId => parent_id = short_str(ctx, o, "parent_id", true)?,
            SpanRule::ParentIndex => parent_index = int(o, "pi")?,
            SpanRule::Links => sp.links = links(ctx, o)?,
            SpanRule::Stacktrace => sp.stacktrace = (d.frames)(ctx, o, d.stacktrace)?,
            SpanRule::Type => ty = short_str(ctx, o, d.type_, true)?,
            SpanRule::Subtype => subtype = short_str(ctx, o, d.subtype, false)?,
            SpanRule::TransactionId => sp.transaction_id = str_field(ctx, o, "transaction_id")?,
            SpanRule::Composite => sp.composite = composite(ctx, o)?,
            SpanRule::Context => sc = (d.context)(ctx, o, &mut ev, &mut sp)?,
            SpanRule::Duration => {
                duration = num(o, d.duration)?;
                ctx.min(d.duration, duration, 0);
                ctx.required(d.duration, duration.is_some());
            }
            SpanRule::SampleRate => {
                sp.representative_count =
                    rep_count(num(o, d.sample_rate)?, d.count_without_sample_rate)
            }
            SpanRule::Sync => sp.sync = boolean(o, d.sync)?,
        }
    }
    ev.timestamp_ns = match ts {
        Some(t) => t,
        None => meta
            .inner
            .base
            .received_ns
            .saturating_add(ms_to_ns(start.unwrap_or(0.0))),
    };
    sp.id = id.unwrap_or_default().to_owned();
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    ev.parent_id = parent_id.unwrap_or_default().to_owned();
    sp.name = SharedStr::intern(name.unwrap_or_default());
    let (t, s, a) = span_types(ty, subtype, action);
    sp.type_ = t;
    sp.subtype = s;
    sp.action = a;
    sp.duration_ns = ms_to_ns(duration.unwrap_or(0.0));
    sp.outcome = SharedStr::intern(match outcome {
        Some(o) if !o.is_empty() => o,
        _ => match sc.http_status {
            Some(s) if s >= 400 => "failure",
            Some(_) => "success",
            None => "unknown",
        },
    });
    if !sc.target_type_sent {
        if let Some(r) = sc.resource {
            ev.service_target = Some(service_target_derive(&r));
        }
    }
    if let Some((kind, _)) = ot {
        sp.span_kind = if kind.is_empty() {
            match sp.type_.as_str() {
                "db" | "external" | "storage" => "CLIENT",
                _ => "INTERNAL",
            }
            .into()
        } else {
            kind
        };
        if sp.outcome == "unknown" {
            sp.outcome = "success".into();
        }
    }
    ev.body = Body::Span(Box::new(sp));
    Ok((ev, parent_index))
}

/// v2 `composite`: a compressed run of similar spans.
fn composite(ctx: &mut Ctx, o: Obj<'_>) -> R<Option<Composite>> {
    let Some(c) = set_obj(o, "composite")? else {
        return Ok(None);
    };
    ctx.push("composite");
    let strat = opt_str(c, "compression_strategy")?;
    ctx.required("compression_strategy", strat.is_some());
    let count = int(c, "count")?;
    ctx.min("count", count.map(|v| v as f64), 2);
    ctx.required("count", count.is_some());
    let sum = num(c, "sum")?;
    ctx.min("sum", sum, 0);
    ctx.required("sum", sum.is_some());
    ctx.pop();
    Ok(Some(Composite {
        strategy: match strat {
            Some(s @ ("exact_match" | "same_kind")) => s.to_owned(),
            _ => String::new(),
        },
        count: count.unwrap_or(0),
        sum_us: (sum.unwrap_or(0.0) * 1000.0).trunc() as i64,
    }))
}

/// A destination service object under keys (name, resource, type), in that
/// order, into `sp`; `resource` is required. Returns the resource.
fn destination_service<'v>(
    ctx: &mut Ctx,
    s: Obj<'v>,
    [name_k, resource_k, type_k]: [&'static str; 3],
    sp: &mut Span,
) -> R<Option<&'v str>> {
    let n = shared_field(ctx, s, name_k)?;
    let r = opt_str(s, resource_k)?;
    ctx.max1024(resource_k, r);
    ctx.required(resource_k, r.is_some());
    let t = shared_field(ctx, s, type_k)?;
    sp.destination_service = Some((t, n, SharedStr::intern(r.unwrap_or_default())));
    Ok(r)
}

/// The span's HTTP status code (under `status_k`) and URL; the status wins
/// over a response status read before it.
fn status_and_url(h: Obj<'_>, status_k: &str, ev: &mut Event) -> R<Option<i64>> {
    let status = int(h, status_k)?;
    if status.is_some() {
        ev.http
            .get_or_insert_with(Default::default)
            .response_status_code = status;
    }
    let url = string(h, "url")?;
    if !url.is_empty() {
        ev.url = Some(Box::new(Url {
            original: url,
            ..Default::default()
        }));
    }
    Ok(status)
}

/// v2 span `context`: tags, service, message, db, destination, http.
fn span_context(ctx: &mut Ctx, o: Obj<'_>, ev: &mut Event, sp: &mut Span) -> R<SpanContext> {
    let mut out = SpanContext::default();
    let Some(c) = set_obj(o, "context")? else {
        return Ok(out);
    };
    ctx.push("context");
    let mut tags = None;
    labels(ctx, c, "tags", &mut tags)?;
    merge_labels(ev, tags);
    out.target_type_sent = context_service(ctx, c, ev)?;
    sp.message = message_ctx(ctx, c)?;
    if let Some(d) = set_obj(c, "db")? {
        ctx.push("db");
        sp.db_instance = string(d, "instance")?;
        sp.db_link = str_field(ctx, d, "link")?;
        sp.db_statement = string(d, "statement")?;
        sp.db_type = shared(d, "type")?;
        sp.db_user = string(d, "user")?;
        sp.db_rows_affected = int(d, "rows_affected")?;
        ctx.pop();
    }
    if let Some(d) = set_obj(c, "destination")? {
        ctx.push("destination");
        if let Some(s) = set_obj(d, "service")? {
            ctx.push("service");
            let r = destination_service(ctx, s, ["name", "resource", "type"], sp)?;
            ctx.pop();
            out.resource = r.map(str::to_owned);
        }
        sp.destination_address = shared_field(ctx, d, "address")?;
        sp.destination_port = int(d, "port")?;
        ctx.pop();
    }
    if let Some(h) = set_obj(c, "http")? {
        ctx.push("http");
        let http = ev.http.get_or_insert_with(Default::default);
        if let Some(rq) = obj(h, "request")? {
            http.request_id = string(rq, "id")?;
        }
        let method = opt_str(h, "method")?;
        ctx.max1024("method", method);
        http.request_method = SharedStr::intern(method.unwrap_or_default());
        if let Some(rs) = obj(h, "response")? {
            http.response_headers = headers(rs, "headers")?;
            http.response_decoded_body_size = int(rs, "decoded_body_size")?;
            http.response_encoded_body_size = int(rs, "encoded_body_size")?;
            http.response_status_code = int(rs, "status_code")?;
            http.response_transfer_size = int(rs, "transfer_size")?;
        }
        out.http_status = status_and_url(h, "status_code", ev)?;
        ctx.pop();
    }
    ctx.pop();
    Ok(out)
}

/// v3 span `c`: destination, tags, http, service.
fn rum_span_context(ctx: &mut Ctx, y: Obj<'_>, ev: &mut Event, sp: &mut Span) -> R<SpanContext> {
    let mut out = SpanContext::default();
    let Some(c) = set_obj(y, "c")? else {
        return Ok(out);
    };
    ctx.push("c");
    if let Some(dt) = set_obj(c, "dt")? {
        ctx.push("dt");
        sp.destination_address = shared_field(ctx, dt, "ad")?;
        sp.destination_port = int(dt, "po")?;
        if let Some(se) = set_obj(dt, "se")? {
            ctx.push("se");
            destination_service(ctx, se, ["n", "rc", "t"], sp)?;
            ctx.pop();
        }
        ctx.pop();
    }
    let mut tags = None;
    labels(ctx, c, "g", &mut tags)?;
    merge_labels(ev, tags);
    if let Some(h) = set_obj(c, "h")? {
        ctx.push("h");
        let mt = opt_str(h, "mt")?;
        ctx.max1024("mt", mt);
        ctx.pop();
        let http = ev.http.get_or_insert_with(Default::default);
        http.request_method = SharedStr::intern(mt.unwrap_or_default());
        if let Some(r) = obj(h, "r")? {
            http.response_decoded_body_size = int(r, "dbs")?;
            http.response_encoded_body_size = int(r, "ebs")?;
            http.response_transfer_size = int(r, "ts")?;
        }
        out.http_status = status_and_url(h, "sc", ev)?;
    }
    if let Some(se) = set_obj(c, "se")? {
        ctx.push("se");
        if let Some(a) = set_obj(se, "a")? {
            ctx.push("a");
            str_field(ctx, a, "n")?;
            str_field(ctx, a, "ve")?;
            ctx.pop();
        }
        let n = opt_str(se, "n")?;
        ctx.max1024("n", n);
        ctx.pop();
        if let Some(n) = n {
            Service::make_mut(&mut ev.service).name = n.to_owned();
        }
    }
    ctx.pop();
    Ok(out)
}

/// Splits and defaults span type/subtype/action: with neither subtype nor
/// action sent, a dotted `type` is `type.subtype.action`; an empty type is
/// `unknown`.
pub(crate) fn span_types(
    ty: Option<&str>,
    subtype: Option<&str>,
    action: Option<&str>,
) -> (SharedStr, SharedStr, SharedStr) {
    let ty = ty.unwrap_or_default();
    let (t, s, a) = if subtype.is_none() && action.is_none() {
        match ty.split_once('.') {
            Some((t, rest)) => match rest.split_once('.') {
                Some((s, a)) => (t, s, a),
                None => (t, rest, ""),
            },
            None => (ty, "", ""),
        }
    } else {
        (ty, subtype.unwrap_or_default(), action.unwrap_or_default())
    };
    let t = if t.is_empty() { "unknown" } else { t };
    (
        SharedStr::intern(t),
        SharedStr::intern(s),
        SharedStr::intern(a),
    )
}
