//! Event contexts and the small objects events share: links, `faas`, the
//! v2 transaction/error `context` (service, user, request, response,
//! message, page, cloud origin), the span service override, OTel bridge
//! attributes, and the v3 context `c`.
//!
//! Invariants: a context only overrides metadata parts it actually sends
//! (copy on write of the shared `Arc`s); client and source addresses from
//! the request are never replaced by the event's.

use super::fields::*;
use super::metadata::{name_version, user, OptNv, NV_V2, NV_V3, USER_V2, USER_V3};
use super::*;
use crate::model::event::*;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub(crate) fn links(ctx: &mut Ctx, o: Obj<'_>) -> R<Vec<Link>> {
    let Some(a) = arr(o, "links")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let Some(l) = set_element(ctx, "links", v)? else {
            continue;
        };
        ctx.push("links");
        let span_id = opt_str(l, "span_id")?;
        ctx.max1024("span_id", span_id);
        ctx.required("span_id", span_id.is_some());
        let trace_id = opt_str(l, "trace_id")?;
        ctx.max1024("trace_id", trace_id);
        ctx.required("trace_id", trace_id.is_some());
        ctx.pop();
        out.push((
            trace_id.unwrap_or_default().to_owned(),
            span_id.unwrap_or_default().to_owned(),
        ));
    }
    Ok(out)
}

pub(crate) fn faas(o: Obj<'_>) -> R<Option<Box<Faas>>> {
    let Some(f) = set_obj(o, "faas")? else {
        return Ok(None);
    };
    let mut out = Faas {
        id: string(f, "id")?,
        coldstart: boolean(f, "coldstart")?,
        execution: string(f, "execution")?,
        name: string(f, "name")?,
        version: string(f, "version")?,
        ..Default::default()
    };
    if let Some(t) = obj(f, "trigger")? {
        out.trigger_type = string(t, "type")?;
        out.trigger_request_id = string(t, "request_id")?;
    }
    Ok(Some(Box::new(out)))
}

/// Parses `ip`, `ip:port` or `[ip]:port`.
pub(crate) fn parse_addr(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port()).filter(|p| *p != 0)));
    }
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'))?;
    inner.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

pub(crate) fn header<'h>(h: &'h Headers, name: &str) -> Option<&'h [SharedStr]> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Client address from forwarding headers: `Forwarded` (`for=`), then
/// `X-Real-Ip`, then the first `X-Forwarded-For` entry.
pub(crate) fn forwarded_addr(h: &Headers) -> Option<(IpAddr, Option<u16>)> {
    if let Some(v) = header(h, "Forwarded").and_then(|v| v.first()) {
        let first = v.split(',').next().unwrap_or("");
        for part in first.split(';') {
            let part = part.trim();
            let (Some(head), Some(rest)) = (part.get(..4), part.get(4..)) else {
                continue;
            };
            if head.eq_ignore_ascii_case("for=") {
                let val = rest.trim_matches('"');
                if let Some(a) = parse_addr(val) {
                    return Some(a);
                }
            }
        }
    }
    if let Some(a) = header(h, "X-Real-Ip")
        .and_then(|v| v.first())
        .and_then(|v| parse_addr(v))
    {
        return Some(a);
    }
    header(h, "X-Forwarded-For")
        .and_then(|v| v.first())
        .and_then(|v| parse_addr(v.split(',').next().unwrap_or("")))
}

pub(crate) fn service_target_derive(resource: &str) -> (SharedStr, SharedStr) {
    let (first, second) = match resource.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (resource, None),
    };
    let first_ok = !first.is_empty()
        && first
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let second_ok = second
        .is_none_or(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if first_ok && second_ok {
        (
            SharedStr::intern(first),
            SharedStr::intern(second.unwrap_or("")),
        )
    } else {
        (SharedStr::default(), SharedStr::intern(resource))
    }
}

/// `context.service`: overrides of the metadata's service and agent. Returns whether `target.type` was sent.
pub(crate) fn context_service(ctx: &mut Ctx, c: Obj<'_>, ev: &mut Event) -> R<bool> {
    let Some(s) = set_obj(c, "service")? else {
        return Ok(false);
    };
    ctx.push("service");
    if let Some(a) = set_obj(s, "agent")? {
        ctx.push("agent");
        let eid = opt_str(a, "ephemeral_id")?;
        ctx.max1024("ephemeral_id", eid);
        let name = opt_str(a, "name")?;
        ctx.max1024("name", name);
        let ver = opt_str(a, "version")?;
        ctx.max1024("version", ver);
        ctx.pop();
        if eid.is_some() || name.is_some() || ver.is_some() {
            let ag = Agent::make_mut(&mut ev.agent);
            if let Some(v) = eid {
                ag.ephemeral_id = v.to_owned();
            }
            if let Some(v) = name {
                ag.name = v.to_owned();
            }
            if let Some(v) = ver {
                ag.version = v.to_owned();
            }
        }
    }
    let env = opt_str(s, "environment")?;
    ctx.max1024("environment", env);
    let fw = name_version(ctx, s, "framework", &NV_V2, false, false)?;
    let _ = opt_str(s, "id")?;
    let lang = name_version(ctx, s, "language", &NV_V2, false, false)?;
    let name = opt_str(s, "name")?;
    ctx.max1024("name", name);
    ctx.service_name_pattern("name", name);
    let node = match set_obj(s, "node")? {
        Some(n) => {
            ctx.push("node");
            let v = opt_str(n, "configured_name")?;
            ctx.max1024("configured_name", v);
            ctx.pop();
            v
        }
        None => None,
    };
    let origin = match set_obj(s, "origin")? {
        Some(o) => Some((string(o, "id")?, string(o, "name")?, string(o, "version")?)),
        None => None,
    };
    let rt = name_version(ctx, s, "runtime", &NV_V2, false, false)?;
    let mut target_type_sent = false;
    let target = match set_obj(s, "target")? {
        Some(t) => {
            let ty = opt_str(t, "type")?;
            let nm = opt_str(t, "name")?;
            if ty.is_none() && nm.is_none() {
                ctx.push("target");
                ctx.fail(|| "requires at least one of the fields 'type;name'".into());
                ctx.pop();
            }
            target_type_sent = ty.is_some();
            Some((
                SharedStr::intern(ty.unwrap_or_default()),
                SharedStr::intern(nm.unwrap_or_default()),
            ))
        }
        None => None,
    };
    let version = opt_str(s, "version")?;
    ctx.max1024("version", version);
    ctx.pop();

    let sv = Service::make_mut(&mut ev.service);
    if let Some(n) = name {
        sv.name = n.to_owned();
        sv.version = version.unwrap_or_default().to_owned();
    }
    if let Some(v) = env {
        sv.environment = v.to_owned();
    }
    if let Some(v) = node {
        sv.node_name = v.to_owned();
    }
    override_nv(sv, fw, lang, rt);
    if let Some((id, n, v)) = origin {
        sv.origin_id = id;
        sv.origin_name = n;
        sv.origin_version = v;
    }
    if target.is_some() {
        ev.service_target = target;
    }
    Ok(target_type_sent)
}

/// Overrides the metadata's framework, language and runtime with the parts
/// an event's `context.service` sent.
fn override_nv(sv: &mut Service, framework: OptNv, language: OptNv, runtime: OptNv) {
    for (dst, src) in [
        (&mut sv.framework, framework),
        (&mut sv.language, language),
        (&mut sv.runtime, runtime),
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

pub(crate) fn message_ctx(ctx: &mut Ctx, c: Obj<'_>) -> R<Option<Message>> {
    let Some(m) = set_obj(c, "message")? else {
        return Ok(None);
    };
    ctx.push("message");
    let mut out = Message::default();
    if let Some(q) = set_obj(m, "queue")? {
        ctx.push("queue");
        out.queue_name = str_field(ctx, q, "name")?;
        ctx.pop();
    }
    if let Some(a) = obj(m, "age")? {
        out.age_ms = int(a, "ms")?;
    }
    out.body = string(m, "body")?;
    out.routing_key = string(m, "routing_key")?;
    out.headers = headers(m, "headers")?;
    ctx.pop();
    Ok(Some(out))
}

pub(crate) fn url_port(ctx: &mut Ctx, u: Obj<'_>) -> R<Option<i64>> {
    match get(u, "port") {
        None => Ok(None),
        Some(V::String(s)) => {
            ctx.max1024("port", Some(s));
            match s.parse::<i64>() {
                Ok(p) => Ok(Some(p)),
                Err(_) => {
                    ctx.fail(|| "'port': validation rule 'targetType(int)' violated".into());
                    Ok(None)
                }
            }
        }
        Some(V::Static(StaticNode::I64(i))) => Ok(Some(i)),
        Some(V::Static(StaticNode::U64(i))) => Ok(i64::try_from(i).ok()),
        Some(_) => {
            ctx.fail(|| "'port': validation rule 'inputTypes(string;int)' violated ".into());
            Ok(None)
        }
    }
}

/// Parses a page URL into `url.*` (unparsable: only `original`, scheme `http`).
pub(crate) fn page_url(raw: &str) -> Url {
    let mut out = Url {
        original: raw.chars().take(1024).collect(),
        ..Default::default()
    };
    if let Ok(u) = url::Url::parse(raw) {
        out.scheme = SharedStr::intern(u.scheme());
        out.full = u.as_str().to_owned();
        out.domain = SharedStr::intern(u.host_str().unwrap_or_default());
        out.path = u.path().to_owned();
        out.query = u.query().unwrap_or_default().to_owned();
        out.fragment = u.fragment().unwrap_or_default().to_owned();
        out.port = u.port().map(i64::from);
    } else if out.scheme.is_empty() {
        out.scheme = "http".into();
    }
    out
}

/// Transaction/error `context`. Returns (response status code, custom).
pub(crate) fn context(ctx: &mut Ctx, o: Obj<'_>, ev: &mut Event) -> R<(Option<i64>, Option<Json>)> {
    let Some(c) = set_obj(o, "context")? else {
        return Ok((None, None));
    };
    ctx.push("context");
    let custom = json_obj(c, "custom")?;
    let mut tags = None;
    labels(ctx, c, "tags", &mut tags)?;
    merge_labels(ev, tags);
    context_service(ctx, c, ev)?;
    if let Some(cl) = set_obj(c, "cloud")? {
        if let Some(or) = obj(cl, "origin")? {
            let mut v: [String; 4] = Default::default();
            if let Some(a) = obj(or, "account")? {
                v[0] = string(a, "id")?;
            }
            v[1] = string(or, "provider")?;
            v[2] = string(or, "region")?;
            if let Some(s) = obj(or, "service")? {
                v[3] = string(s, "name")?;
            }
            if v.iter().any(|s| !s.is_empty()) {
                cloud_origin_slot(ev, v);
            }
        }
    }
    if let Some(u) = set_obj(c, "user")? {
        ctx.push("user");
        let (user, any) = user(ctx, u, &USER_V2)?;
        ctx.pop();
        if any {
            ev.user = Arc::new(user);
        }
    }
    let mut referer = None;
    let mut page = None;
    if let Some(p) = set_obj(c, "page")? {
        referer = opt_str(p, "referer")?.map(str::to_owned);
        page = opt_str(p, "url")?.map(str::to_owned);
    }
    let mut has_request_url = false;
    if let Some(r) = set_obj(c, "request")? {
        ctx.push("request");
        let body = match get(r, "body") {
            None => None,
            Some(V::String(s)) => Some(Json::Str(s.to_string())),
            Some(v @ V::Object(_)) => Some(to_json(v)),
            Some(_) => {
                ctx.fail(|| "'body': validation rule 'inputTypes(string;object)' violated ".into());
                None
            }
        };
        let cookies = json_obj(r, "cookies")?;
        let env = json_obj(r, "env")?;
        let hdrs = headers(r, "headers")?;
        let mut url = None;
        if let Some(u) = set_obj(r, "url")? {
            ctx.push("url");
            let port = url_port(ctx, u)?;
            let full = str_field(ctx, u, "full")?;
            let hash = str_field(ctx, u, "hash")?;
            let hostname = shared_field(ctx, u, "hostname")?;
            let pathname = str_field(ctx, u, "pathname")?;
            let protocol = opt_str(u, "protocol")?;
            ctx.max1024("protocol", protocol);
            let protocol = protocol.unwrap_or_default();
            let raw = str_field(ctx, u, "raw")?;
            let search = str_field(ctx, u, "search")?;
            ctx.pop();
            has_request_url = true;
            url = Some(Url {
                original: raw,
                full,
                domain: hostname,
                path: pathname,
                query: search,
                fragment: hash,
                scheme: SharedStr::intern(protocol.strip_suffix(':').unwrap_or(protocol)),
                port,
            });
        }
        let version = shared_field(ctx, r, "http_version")?;
        let method = opt_str(r, "method")?;
        ctx.max1024("method", method);
        ctx.required("method", method.is_some());
        let mut socket_addr = None;
        if let Some(s) = obj(r, "socket")? {
            if let Some(ra) = opt_str(s, "remote_address")? {
                socket_addr = parse_addr(ra);
            }
            let _ = boolean(s, "encrypted")?;
        }
        ctx.pop();

        // client / source: the socket address unless the request already set
        // them; forwarding headers win and make the socket address the NAT IP
        let cl = &mut ev.client;
        if cl.source_ip.is_none() && cl.client_ip.is_none() {
            if let Some((ip, port)) = socket_addr {
                cl.source_ip = Some(ip);
                cl.source_port = port;
            }
            cl.client_ip = cl.source_ip;
            if let Some((ip, port)) = forwarded_addr(&hdrs) {
                if let Some((sip, _)) = socket_addr {
                    cl.nat_ip = Some(sip);
                }
                cl.client_ip = Some(ip);
                cl.source_ip = Some(ip);
                cl.client_port = port;
                cl.source_port = port;
            }
        }
        if let Some(ua) = header(&hdrs, "User-Agent") {
            ev.client.user_agent = ua.join(", ");
        }
        let http = ev.http.get_or_insert_with(Default::default);
        http.request_method = SharedStr::intern(method.unwrap_or_default());
        http.version = version;
        http.request_headers = hdrs;
        http.request_cookies = cookies;
        http.request_env = env;
        http.request_body = body;
        if let Some(u) = url {
            ev.url = Some(Box::new(u));
        }
    }
    if let Some(m) = message_ctx(ctx, c)? {
        message_slot(ev, m);
    }
    let mut status = None;
    if let Some(r) = set_obj(c, "response")? {
        let http = ev.http.get_or_insert_with(Default::default);
        http.response_headers = headers(r, "headers")?;
        status = int(r, "status_code")?;
        http.response_status_code = status;
        http.response_transfer_size = int(r, "transfer_size")?;
        http.response_decoded_body_size = int(r, "decoded_body_size")?;
        http.response_encoded_body_size = int(r, "encoded_body_size")?;
        http.response_finished = boolean(r, "finished")?;
        http.response_headers_sent = boolean(r, "headers_sent")?;
    }
    if let Some(rf) = referer {
        let http = ev.http.get_or_insert_with(Default::default);
        if http.request_referrer.is_empty() {
            http.request_referrer = rf;
        }
    }
    if let Some(p) = page {
        if !has_request_url {
            ev.url = Some(Box::new(page_url(&p)));
        }
    }
    ctx.pop();
    Ok((status, custom))
}

pub(crate) fn cloud_origin_slot(ev: &mut Event, v: [String; 4]) {
    if let Body::Transaction(t) = &mut ev.body {
        t.cloud_origin = Some(v);
    }
}

pub(crate) fn message_slot(ev: &mut Event, m: Message) {
    match &mut ev.body {
        Body::Transaction(t) => t.message = Some(m),
        Body::Span(s) => s.message = Some(m),
        _ => {}
    }
}

/// OTel bridge attributes (partial): returns (span_kind, profiler ids) and folds
/// remaining attributes into labels.
pub(crate) fn otel(o: Obj<'_>, ev: &mut Event) -> R<Option<(String, Vec<String>)>> {
    let Some(ot) = set_obj(o, "otel")? else {
        return Ok(None);
    };
    let kind = string(ot, "span_kind")?;
    let mut ids = Vec::new();
    if let Some(attrs) = obj(ot, "attributes")? {
        let mut l = Labels::default();
        for (k, v) in attrs.iter() {
            if k == "elastic.profiler_stack_trace_ids" {
                if let V::Array(a) = v {
                    ids.extend(a.iter().filter_map(|e| e.as_str().map(str::to_owned)));
                }
                continue;
            }
            let key = k.replace('.', "_");
            match v {
                V::String(s) => l.set_string(&key, s.to_string()),
                V::Static(StaticNode::Bool(b)) => l.set_string(&key, b.to_string()),
                V::Static(StaticNode::I64(i)) => l.set_number(&key, i as f64),
                V::Static(StaticNode::U64(i)) => l.set_number(&key, i as f64),
                V::Static(StaticNode::F64(f)) => l.set_number(&key, f),
                _ => {}
            }
        }
        merge_labels(ev, Some(l));
    }
    Ok(Some((kind, ids)))
}

/// Context `c` of v3 transactions and errors. Returns (response status, custom).
pub(crate) fn rum_context(
    ctx: &mut Ctx,
    o: Obj<'_>,
    ev: &mut Event,
) -> R<(Option<i64>, Option<Json>)> {
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
        let hve = shared_field(ctx, q, "hve")?;
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
        h.request_method = SharedStr::intern(mt.unwrap_or_default());
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
        let agent = name_version(ctx, s, "a", &NV_V3, false, false)?;
        let en = opt_str(s, "en")?;
        ctx.max1024("en", en);
        let fw = name_version(ctx, s, "fw", &NV_V3, false, false)?;
        let la = name_version(ctx, s, "la", &NV_V3, false, false)?;
        let n = opt_str(s, "n")?;
        ctx.max1024("n", n);
        ctx.service_name_pattern("n", n);
        let ru = name_version(ctx, s, "ru", &NV_V3, false, false)?;
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
        override_nv(sv, fw, la, ru);
    }
    if let Some(u) = set_obj(c, "u")? {
        ctx.push("u");
        let (u, any) = user(ctx, u, &USER_V3)?;
        ctx.pop();
        if any {
            ev.user = Arc::new(u);
        }
    }
    ctx.pop();
    Ok((status, custom))
}
