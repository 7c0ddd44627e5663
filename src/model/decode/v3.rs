//! RUM v3 decoding (documents.md §14, differences in §5.4, §7.5, §8, §9.3):
//! `m` metadata, `x` transactions with nested spans (`y`) and breakdown
//! metricsets (`me`), and `e` errors, into the same [`Event`]s as v2.
//!
//! Invariants: validation paths use the short v3 keys; one `x` line yields
//! the transaction, then its metricsets, then its spans; v3 transactions and
//! metricsets always carry the request time, spans request time + `s` ms.

use super::v2::{
    build_metadata, experience, finalize, header, merge_labels, page_url, rep_count, span_types,
    str_field,
};
use super::*;
use crate::model::event::*;
use crate::model::grouping::grouping_key;
use std::sync::Arc;

fn nv(
    ctx: &mut Ctx,
    o: Obj<'_>,
    k: &'static str,
    name_req: bool,
    ver_req: bool,
) -> R<Option<(Option<String>, Option<String>)>> {
    let Some(m) = set_obj(o, k)? else {
        return Ok(None);
    };
    ctx.push(k);
    let n = opt_str(m, "n")?;
    ctx.max1024("n", n);
    if name_req {
        ctx.required("n", n.is_some());
    }
    let v = opt_str(m, "ve")?;
    ctx.max1024("ve", v);
    if ver_req {
        ctx.required("ve", v.is_some());
    }
    ctx.pop();
    Ok(Some((n.map(str::to_owned), v.map(str::to_owned))))
}

fn to_nv(v: Option<(Option<String>, Option<String>)>) -> NameVersion {
    let (n, v) = v.unwrap_or_default();
    NameVersion {
        name: n.unwrap_or_default(),
        version: v.unwrap_or_default(),
    }
}

fn user(ctx: &mut Ctx, u: Obj<'_>) -> R<(User, bool)> {
    let domain = str_field(ctx, u, "ud")?;
    let id = str_or_int(ctx, u, "id")?;
    let email = str_field(ctx, u, "em")?;
    let name = str_field(ctx, u, "un")?;
    let any = ["id", "un", "em", "ud"].iter().any(|k| get(u, k).is_some());
    Ok((
        User {
            id: id.unwrap_or_default(),
            name,
            email,
            domain,
        },
        any,
    ))
}

/// Decodes a v3 metadata root (`{"m": …}`).
pub(crate) fn decode_metadata(
    root: Obj<'_>,
    base: &RequestBase,
    cfg: &DecodeConfig,
) -> R<Metadata> {
    let m = match obj(root, "m")? {
        Some(m) if is_set_known(m, Some(&["se", "u", "l", "n"])) => m,
        _ => return Err(LineError::Validation("'m' required".into())),
    };
    let mut ctx = Ctx::default();
    ctx.push("m");
    let mut lbl = None;
    labels(&mut ctx, m, "l", &mut lbl)?;
    let mut service = Service::default();
    let mut agent = Agent::default();
    match set_obj(m, "se")? {
        Some(s) => {
            ctx.push("se");
            match set_obj(s, "a")? {
                Some(a) => {
                    ctx.push("a");
                    let n = opt_str(a, "n")?;
                    ctx.max1024("n", n);
                    if n == Some("") {
                        ctx.fail(|| "'n': validation rule 'minLength(1)' violated".into());
                    }
                    ctx.required("n", n.is_some());
                    let v = opt_str(a, "ve")?;
                    ctx.max1024("ve", v);
                    ctx.required("ve", v.is_some());
                    ctx.pop();
                    agent.name = n.unwrap_or_default().to_owned();
                    agent.version = v.unwrap_or_default().to_owned();
                }
                None => ctx.required("a", false),
            }
            service.environment = str_field(&mut ctx, s, "en")?;
            service.framework = to_nv(nv(&mut ctx, s, "fw", false, false)?);
            service.language = to_nv(nv(&mut ctx, s, "la", true, false)?);
            let n = opt_str(s, "n")?;
            ctx.max1024("n", n);
            if n == Some("") {
                ctx.fail(|| "'n': validation rule 'minLength(1)' violated".into());
            }
            ctx.service_name_pattern("n", n);
            ctx.required("n", n.is_some());
            service.name = n.unwrap_or_default().to_owned();
            service.runtime = to_nv(nv(&mut ctx, s, "ru", true, true)?);
            service.version = str_field(&mut ctx, s, "ve")?;
            ctx.pop();
        }
        None => ctx.required("se", false),
    }
    let mut u = User::default();
    if let Some(uo) = set_obj(m, "u")? {
        ctx.push("u");
        u = user(&mut ctx, uo)?.0;
        ctx.pop();
    }
    let mut sh = Shared::default();
    if let Some(n) = set_obj(m, "n")? {
        if let Some(c) = set_obj(n, "c")? {
            ctx.push("n");
            ctx.push("c");
            sh.network_connection_type = str_field(&mut ctx, c, "t")?;
            ctx.pop();
            ctx.pop();
        }
    }
    ctx.finish()?;
    Ok(build_metadata(
        base,
        cfg,
        sh,
        service,
        agent,
        u,
        lbl.unwrap_or_default(),
    ))
}

/// Decodes a v3 `x` (transaction) or `e` (error) line.
pub(crate) fn decode_event(
    is_tx: bool,
    root: Obj<'_>,
    meta: &Metadata,
    cfg: &DecodeConfig,
    out: &mut Vec<Event>,
) -> R<()> {
    let key = if is_tx { "x" } else { "e" };
    let known: &[&str] = if is_tx {
        &[
            "id", "tid", "pid", "n", "t", "d", "rt", "o", "sm", "sr", "yc", "k", "ses", "exp", "c",
            "y", "me",
        ]
    } else {
        &[
            "id",
            "timestamp",
            "tid",
            "pid",
            "xid",
            "cl",
            "x",
            "ex",
            "log",
            "c",
        ]
    };
    let o = match obj(root, key)? {
        Some(o) if is_set_known(o, Some(known)) => o,
        _ => return Err(LineError::Validation(format!("'{key}' required"))),
    };
    let mut ctx = Ctx::default();
    ctx.push(key);
    let start = out.len();
    if is_tx {
        transaction(&mut ctx, o, meta, out)?;
    } else {
        out.push(error(&mut ctx, o, meta)?);
    }
    if let Err(e) = ctx.finish() {
        out.truncate(start);
        return Err(e);
    }
    for ev in out.iter_mut().skip(start) {
        finalize(ev, cfg);
    }
    Ok(())
}

fn frames(ctx: &mut Ctx, o: Obj<'_>) -> R<Vec<Frame>> {
    let Some(a) = arr(o, "st")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let f = match v {
            V::Object(f) if f.values().any(is_set) => f,
            V::Object(_) | V::Static(StaticNode::Null) => {
                ctx.fail(|| "st slice element required".into());
                continue;
            }
            _ => return Err(LineError::Decode("st: expected object".into())),
        };
        let filename = opt_str(f, "f")?;
        ctx.push("st");
        ctx.required("f", filename.is_some());
        ctx.pop();
        out.push(Frame {
            abs_path: string(f, "ap")?,
            filename: filename.unwrap_or_default().to_owned(),
            classname: string(f, "cn")?,
            function: string(f, "fn")?,
            module: string(f, "mo")?,
            lineno: int(f, "li")?,
            colno: int(f, "co")?,
            context_line: string(f, "cli")?,
            pre_context: str_arr(f, "prc")?,
            post_context: str_arr(f, "poc")?,
            ..Default::default()
        });
    }
    Ok(out)
}

/// Context `c` of transactions and errors (§14.4). Returns (response status, custom).
fn context(ctx: &mut Ctx, o: Obj<'_>, ev: &mut Event) -> R<(Option<i64>, Option<Json>)> {
    let Some(c) = set_obj(o, "c")? else {
        return Ok((None, None));
    };
    ctx.push("c");
    let custom = json_obj(c, "cu")?;
    let mut tags = None;
    labels(ctx, c, "g", &mut tags)?;
    merge_labels(ev, tags);
    if let Some(p) = set_obj(c, "p")? {
        let rf = string(p, "rf")?;
        if let Some(u) = opt_str(p, "url")? {
            ev.url = Some(Box::new(page_url(u)));
        }
        if !rf.is_empty() {
            ev.http
                .get_or_insert_with(Default::default)
                .request_referrer = rf;
        }
    }
    if let Some(q) = set_obj(c, "q")? {
        ctx.push("q");
        let env = json_obj(q, "en")?;
        let hdrs = headers(q, "he")?;
        let hve = str_field(ctx, q, "hve")?;
        let mt = opt_str(q, "mt")?;
        ctx.max1024("mt", mt);
        ctx.required("mt", mt.is_some());
        ctx.pop();
        if let Some(ua) = header(&hdrs, "User-Agent") {
            ev.client.user_agent = ua.join(", ");
        }
        let h = ev.http.get_or_insert_with(Default::default);
        h.request_env = env;
        h.request_headers = hdrs;
        h.version = hve;
        h.request_method = mt.unwrap_or_default().to_owned();
    }
    let mut status = None;
    if let Some(r) = set_obj(c, "r")? {
        let h = ev.http.get_or_insert_with(Default::default);
        h.response_decoded_body_size = int(r, "dbs")?;
        h.response_encoded_body_size = int(r, "ebs")?;
        h.response_headers = headers(r, "he")?;
        status = int(r, "sc")?;
        h.response_status_code = status;
        h.response_transfer_size = int(r, "ts")?;
    }
    if let Some(s) = set_obj(c, "se")? {
        ctx.push("se");
        let agent = nv(ctx, s, "a", false, false)?;
        let en = opt_str(s, "en")?;
        ctx.max1024("en", en);
        let fw = nv(ctx, s, "fw", false, false)?;
        let la = nv(ctx, s, "la", false, false)?;
        let n = opt_str(s, "n")?;
        ctx.max1024("n", n);
        ctx.service_name_pattern("n", n);
        let ru = nv(ctx, s, "ru", false, false)?;
        let ve = opt_str(s, "ve")?;
        ctx.max1024("ve", ve);
        ctx.pop();
        if let Some((an, av)) = agent {
            if an.is_some() || av.is_some() {
                let a = Agent::make_mut(&mut ev.agent);
                if let Some(v) = an {
                    a.name = v;
                }
                if let Some(v) = av {
                    a.version = v;
                }
            }
        }
        let sv = Service::make_mut(&mut ev.service);
        if let Some(n) = n {
            sv.name = n.to_owned();
            sv.version = ve.unwrap_or_default().to_owned();
        }
        if let Some(v) = en {
            sv.environment = v.to_owned();
        }
        for (dst, src) in [
            (&mut sv.framework, fw),
            (&mut sv.language, la),
            (&mut sv.runtime, ru),
        ] {
            if let Some((n, v)) = src {
                if let Some(n) = n {
                    dst.name = n;
                }
                if let Some(v) = v {
                    dst.version = v;
                }
            }
        }
    }
    if let Some(u) = set_obj(c, "u")? {
        ctx.push("u");
        let (u, any) = user(ctx, u)?;
        ctx.pop();
        if any {
            ev.user = Arc::new(u);
        }
    }
    ctx.pop();
    Ok((status, custom))
}

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

fn expand_mark(k: &str) -> String {
    MARK_NAMES
        .iter()
        .find(|(s, _)| *s == k)
        .map(|(_, l)| (*l).to_owned())
        .unwrap_or_else(|| k.to_owned())
}

fn expand_group(k: &str) -> String {
    match k {
        "a" => "agent".into(),
        "nt" => "navigationTiming".into(),
        _ => k.to_owned(),
    }
}

fn transaction(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata, out: &mut Vec<Event>) -> R<()> {
    let mut ev = Event::new(meta, Body::Transaction(Box::default()));
    let mut tx = Transaction::default();
    ev.body = Body::Transaction(Box::default());
    let (status, custom) = context(ctx, o, &mut ev)?;
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
            let sp = span(ctx, y, meta)?;
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

fn span(ctx: &mut Ctx, y: Obj<'_>, meta: &Metadata) -> R<(Event, Option<i64>)> {
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
    sp.stacktrace = frames(ctx, y)?;
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

fn exception(ctx: &mut Ctx, x: Obj<'_>, parent: Option<usize>, out: &mut Vec<Exception>) -> R<()> {
    if get(x, "mg").is_none() && get(x, "t").is_none() {
        ctx.fail(|| "requires at least one of the fields 'mg;t'".into());
    }
    let attributes = json_obj(x, "at")?;
    let code = str_or_int(ctx, x, "cd")?.unwrap_or_default();
    let idx = out.len();
    out.push(Exception {
        attributes,
        code,
        parent,
        ..Default::default()
    });
    if let Some(causes) = arr(x, "ca")? {
        for c in causes {
            match c {
                V::Object(c) if c.values().any(is_set) => {
                    ctx.push("ca");
                    exception(ctx, c, Some(idx), out)?;
                    ctx.pop();
                }
                V::Object(_) | V::Static(StaticNode::Null) => {
                    ctx.fail(|| "ca slice element required".into())
                }
                _ => return Err(LineError::Decode("ca: expected object".into())),
            }
        }
    }
    let handled = boolean(x, "hd")?;
    let message = string(x, "mg")?;
    let module = str_field(ctx, x, "mo")?;
    let st = frames(ctx, x)?;
    let ty = str_field(ctx, x, "t")?;
    if let Some(e) = out.get_mut(idx) {
        e.stacktrace = st;
        e.message = message;
        e.module = module;
        e.type_ = ty;
        e.handled = handled;
    }
    Ok(())
}

fn error(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
    let mut ev = Event::new(meta, Body::Error(Box::default()));
    let mut er = ErrorEvent::default();
    let (_, custom) = context(ctx, o, &mut ev)?;
    er.custom = custom;
    er.culprit = str_field(ctx, o, "cl")?;
    let exc = set_obj(o, "ex")?;
    let lg = set_obj(o, "log")?;
    if exc.is_none() && lg.is_none() {
        ctx.fail(|| "requires at least one of the fields 'ex;log'".into());
    }
    if let Some(x) = exc {
        ctx.push("ex");
        exception(ctx, x, None, &mut er.exceptions)?;
        ctx.pop();
    }
    let id = opt_str(o, "id")?;
    ctx.max1024("id", id);
    ctx.required("id", id.is_some());
    if let Some(l) = lg {
        ctx.push("log");
        let level = str_field(ctx, l, "lv")?;
        let logger = opt_str(l, "ln")?;
        ctx.max1024("ln", logger);
        let message = opt_str(l, "mg")?;
        ctx.max1024("mg", message);
        ctx.required("mg", message.is_some());
        let pmg = str_field(ctx, l, "pmg")?;
        let st = frames(ctx, l)?;
        ctx.pop();
        er.log = Some(ErrorLog {
            message: message.unwrap_or_default().to_owned(),
            level: if level.is_empty() {
                "error".into()
            } else {
                level
            },
            logger_name: match logger {
                Some(l) if !l.is_empty() => l.to_owned(),
                _ => "default".into(),
            },
            param_message: pmg,
            stacktrace: st,
        });
    }
    let parent_id = opt_str(o, "pid")?;
    let trace_id = opt_str(o, "tid")?;
    let tx_id = opt_str(o, "xid")?;
    ctx.max1024("pid", parent_id);
    if parent_id.is_none() {
        if tx_id.is_some() {
            ctx.fail(|| "'pid' required when 'xid' is set".into());
        } else if trace_id.is_some() {
            ctx.fail(|| "'pid' required when 'tid' is set".into());
        }
    }
    if let Some(ts) = timestamp(o, "timestamp")? {
        ev.timestamp_ns = ts;
    }
    ctx.max1024("tid", trace_id);
    if trace_id.is_none() {
        if tx_id.is_some() {
            ctx.fail(|| "'tid' required when 'xid' is set".into());
        } else if parent_id.is_some() {
            ctx.fail(|| "'tid' required when 'pid' is set".into());
        }
    }
    let x = set_obj(o, "x")?;
    if let Some(x) = x {
        ctx.push("x");
        er.transaction_name = str_field(ctx, x, "n")?;
        er.transaction_sampled = boolean(x, "sm")?;
        er.transaction_type = str_field(ctx, x, "t")?;
        ctx.pop();
    }
    ctx.max1024("xid", tx_id);
    er.id = id.unwrap_or_default().to_owned();
    ev.parent_id = parent_id.unwrap_or_default().to_owned();
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    if x.is_some() {
        er.transaction_id = tx_id.unwrap_or_default().to_owned();
    }
    er.message = match &er.log {
        Some(l) if !l.message.is_empty() => l.message.clone(),
        _ => er
            .exceptions
            .first()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
    };
    er.grouping_key = grouping_key(&er);
    ev.body = Body::Error(Box::new(er));
    Ok(ev)
}
