//! TODO

use super::context::{context_service, links, message_ctx, otel, service_target_derive};
use super::fields::*;
use super::stacktrace::{frames, rum_frames};
use super::*;
use crate::model::event::*;

/// Splits and defaults span type/subtype/action (§7.1).
pub(crate) fn span_types(
    ty: Option<&str>,
    subtype: Option<&str>,
    action: Option<&str>,
) -> (String, String, String) {
    let ty = ty.unwrap_or_default();
    let (t, s, a) = if subtype.is_none() && action.is_none() {
        match ty.split_once('.') {
            Some((t, rest)) => match rest.split_once('.') {
                Some((s, a)) => (t.to_owned(), s.to_owned(), a.to_owned()),
                None => (t.to_owned(), rest.to_owned(), String::new()),
            },
            None => (ty.to_owned(), String::new(), String::new()),
        }
    } else {
        (
            ty.to_owned(),
            subtype.unwrap_or_default().to_owned(),
            action.unwrap_or_default().to_owned(),
        )
    };
    (if t.is_empty() { "unknown".into() } else { t }, s, a)
}

pub(crate) fn span(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
    let mut ev = Event::new(meta, Body::Span(Box::default()));
    let mut sp = Span::default();
    let ts = timestamp(o, "timestamp")?;
    let start = num(o, "start")?;
    if ts.is_none() && start.is_none() {
        ctx.fail(|| "requires at least one of the fields 'start;timestamp'".into());
    }
    let ot = otel(o, &mut ev)?;
    let id = opt_str(o, "id")?;
    ctx.max1024("id", id);
    ctx.required("id", id.is_some());
    let trace_id = opt_str(o, "trace_id")?;
    ctx.max1024("trace_id", trace_id);
    ctx.required("trace_id", trace_id.is_some());
    let action = opt_str(o, "action")?;
    ctx.max1024("action", action);
    let name = opt_str(o, "name")?;
    ctx.max1024("name", name);
    ctx.required("name", name.is_some());
    let outcome = opt_str(o, "outcome")?;
    ctx.outcome(outcome);
    sp.child_ids = str_arr(o, "child_ids")?;
    for c in &sp.child_ids {
        ctx.max1024("child_ids", Some(c));
    }
    let parent_id = opt_str(o, "parent_id")?;
    ctx.max1024("parent_id", parent_id);
    ctx.required("parent_id", parent_id.is_some());
    sp.links = links(ctx, o)?;
    sp.stacktrace = frames(ctx, o, "stacktrace")?;
    let ty = opt_str(o, "type")?;
    ctx.max1024("type", ty);
    ctx.required("type", ty.is_some());
    let subtype = opt_str(o, "subtype")?;
    ctx.max1024("subtype", subtype);
    sp.transaction_id = str_field(ctx, o, "transaction_id")?;
    if let Some(c) = set_obj(o, "composite")? {
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
        sp.composite = Some(Composite {
            strategy: match strat {
                Some(s @ ("exact_match" | "same_kind")) => s.to_owned(),
                _ => String::new(),
            },
            count: count.unwrap_or(0),
            sum_us: (sum.unwrap_or(0.0) * 1000.0).trunc() as i64,
        });
    }
    // context
    let mut http_status = None;
    let mut target_type_sent = false;
    let mut resource: Option<String> = None;
    if let Some(c) = set_obj(o, "context")? {
        ctx.push("context");
        let mut tags = None;
        labels(ctx, c, "tags", &mut tags)?;
        merge_labels(&mut ev, tags);
        target_type_sent = context_service(ctx, c, &mut ev)?;
        sp.message = message_ctx(ctx, c)?;
        if let Some(d) = set_obj(c, "db")? {
            ctx.push("db");
            sp.db_instance = string(d, "instance")?;
            sp.db_link = str_field(ctx, d, "link")?;
            sp.db_statement = string(d, "statement")?;
            sp.db_type = string(d, "type")?;
            sp.db_user = string(d, "user")?;
            sp.db_rows_affected = int(d, "rows_affected")?;
            ctx.pop();
        }
        if let Some(d) = set_obj(c, "destination")? {
            ctx.push("destination");
            if let Some(s) = set_obj(d, "service")? {
                ctx.push("service");
                let n = str_field(ctx, s, "name")?;
                let r = opt_str(s, "resource")?;
                ctx.max1024("resource", r);
                ctx.required("resource", r.is_some());
                let t = str_field(ctx, s, "type")?;
                ctx.pop();
                resource = r.map(str::to_owned);
                sp.destination_service = Some((t, n, r.unwrap_or_default().to_owned()));
            }
            sp.destination_address = str_field(ctx, d, "address")?;
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
            http.request_method = method.unwrap_or_default().to_owned();
            if let Some(rs) = obj(h, "response")? {
                http.response_headers = headers(rs, "headers")?;
                http.response_decoded_body_size = int(rs, "decoded_body_size")?;
                http.response_encoded_body_size = int(rs, "encoded_body_size")?;
                http.response_status_code = int(rs, "status_code")?;
                http.response_transfer_size = int(rs, "transfer_size")?;
            }
            http_status = int(h, "status_code")?;
            if http_status.is_some() {
                http.response_status_code = http_status;
            }
            let url = string(h, "url")?;
            if !url.is_empty() {
                ev.url = Some(Box::new(Url {
                    original: url,
                    ..Default::default()
                }));
            }
            ctx.pop();
        }
        ctx.pop();
    }
    let duration = num(o, "duration")?;
    ctx.min("duration", duration, 0);
    ctx.required("duration", duration.is_some());
    sp.representative_count = rep_count(num(o, "sample_rate")?, true);
    sp.sync = boolean(o, "sync")?;

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
    sp.name = name.unwrap_or_default().to_owned();
    let (t, s, a) = span_types(ty, subtype, action);
    sp.type_ = t;
    sp.subtype = s;
    sp.action = a;
    sp.duration_ns = ms_to_ns(duration.unwrap_or(0.0));
    sp.outcome = match outcome {
        Some(o) if !o.is_empty() => o.to_owned(),
        _ => match http_status {
            Some(s) if s >= 400 => "failure".into(),
            Some(_) => "success".into(),
            None => "unknown".into(),
        },
    };
    if !target_type_sent {
        if let Some(r) = resource {
            Service::make_mut(&mut ev.service).target = Some(service_target_derive(&r));
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
    Ok(ev)
}

pub(crate) fn rum_span(ctx: &mut Ctx, y: Obj<'_>, meta: &Metadata) -> R<(Event, Option<i64>)> {
    let mut ev = Event::new(meta, Body::Span(Box::default()));
    let mut sp = Span::default();
    let action = opt_str(y, "ac")?;
    ctx.max1024("ac", action);
    let mut http_status = None;
    if let Some(c) = set_obj(y, "c")? {
        ctx.push("c");
        if let Some(dt) = set_obj(c, "dt")? {
            ctx.push("dt");
            sp.destination_address = str_field(ctx, dt, "ad")?;
            sp.destination_port = int(dt, "po")?;
            if let Some(se) = set_obj(dt, "se")? {
                ctx.push("se");
                let n = str_field(ctx, se, "n")?;
                let rc = opt_str(se, "rc")?;
                ctx.max1024("rc", rc);
                ctx.required("rc", rc.is_some());
                let t = str_field(ctx, se, "t")?;
                ctx.pop();
                sp.destination_service = Some((t, n, rc.unwrap_or_default().to_owned()));
            }
            ctx.pop();
        }
        let mut tags = None;
        labels(ctx, c, "g", &mut tags)?;
        merge_labels(&mut ev, tags);
        if let Some(h) = set_obj(c, "h")? {
            ctx.push("h");
            let mt = opt_str(h, "mt")?;
            ctx.max1024("mt", mt);
            ctx.pop();
            let http = ev.http.get_or_insert_with(Default::default);
            http.request_method = mt.unwrap_or_default().to_owned();
            if let Some(r) = obj(h, "r")? {
                http.response_decoded_body_size = int(r, "dbs")?;
                http.response_encoded_body_size = int(r, "ebs")?;
                http.response_transfer_size = int(r, "ts")?;
            }
            http_status = int(h, "sc")?;
            if http_status.is_some() {
                http.response_status_code = http_status;
            }
            let url = string(h, "url")?;
            if !url.is_empty() {
                ev.url = Some(Box::new(Url {
                    original: url,
                    ..Default::default()
                }));
            }
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
    }
    let duration = num(y, "d")?;
    ctx.min("d", duration, 0);
    ctx.required("d", duration.is_some());
    let id = opt_str(y, "id")?;
    ctx.max1024("id", id);
    ctx.required("id", id.is_some());
    let name = opt_str(y, "n")?;
    ctx.max1024("n", name);
    ctx.required("n", name.is_some());
    let outcome = opt_str(y, "o")?;
    ctx.outcome(outcome);
    let pi = int(y, "pi")?;
    let start = num(y, "s")?;
    ctx.required("s", start.is_some());
    sp.representative_count = rep_count(num(y, "sr")?, false);
    sp.stacktrace = rum_frames(ctx, y, "st")?;
    let subtype = opt_str(y, "su")?;
    ctx.max1024("su", subtype);
    sp.sync = boolean(y, "sy")?;
    let ty = opt_str(y, "t")?;
    ctx.max1024("t", ty);
    ctx.required("t", ty.is_some());

    ev.timestamp_ns = meta
        .inner
        .base
        .received_ns
        .saturating_add(ms_to_ns(start.unwrap_or(0.0)));
    sp.id = id.unwrap_or_default().to_owned();
    sp.name = name.unwrap_or_default().to_owned();
    let (t, s, a) = span_types(ty, subtype, action);
    sp.type_ = t;
    sp.subtype = s;
    sp.action = a;
    sp.duration_ns = ms_to_ns(duration.unwrap_or(0.0));
    sp.outcome = match outcome {
        Some(o) if !o.is_empty() => o.to_owned(),
        _ => match http_status {
            Some(s) if s >= 400 => "failure".into(),
            Some(_) => "success".into(),
            None => "unknown".into(),
        },
    };
    ev.body = Body::Span(Box::new(sp));
    Ok((ev, pi))
}
