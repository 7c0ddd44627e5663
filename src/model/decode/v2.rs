//! Intake v2 decoding: metadata, transaction, span, error, metricset and log
//! lines → [`Event`]s, with the field mapping of documents.md §5–§12 and the
//! validation rules of §15.2 (checked in upstream struct order; the first
//! violation wins).
//!
//! Invariants: every event starts from the request's metadata (shared `Arc`s,
//! copied on write by overrides); after decoding, [`finalize`] applies the
//! §5.2 node-name default and the default service environment.

use super::*;
use crate::model::event::*;
use crate::model::grouping::grouping_key;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Which v2 event a line holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Transaction,
    Span,
    Error,
    Metricset,
    Log,
}

// ---------------------------------------------------------------------------
// metadata

fn name_version(
    ctx: &mut Ctx,
    o: Obj<'_>,
    k: &'static str,
    name_req: bool,
    ver_req: bool,
) -> R<Option<NameVersion>> {
    let Some(m) = set_obj(o, k)? else {
        return Ok(None);
    };
    ctx.push(k);
    let name = opt_str(m, "name")?;
    ctx.max1024("name", name);
    if name_req {
        ctx.required("name", name.is_some());
    }
    let version = opt_str(m, "version")?;
    ctx.max1024("version", version);
    if ver_req {
        ctx.required("version", version.is_some());
    }
    ctx.pop();
    Ok(Some(NameVersion {
        name: name.unwrap_or_default().to_owned(),
        version: version.unwrap_or_default().to_owned(),
    }))
}

pub(crate) fn str_field(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<String> {
    let s = opt_str(o, k)?;
    ctx.max1024(k, s);
    Ok(s.unwrap_or_default().to_owned())
}

fn nested_str(ctx: &mut Ctx, o: Obj<'_>, outer: &'static str, k: &'static str) -> R<String> {
    let Some(m) = set_obj(o, outer)? else {
        return Ok(String::new());
    };
    ctx.push(outer);
    let s = str_field(ctx, m, k)?;
    ctx.pop();
    Ok(s)
}

fn decode_user(ctx: &mut Ctx, u: Obj<'_>) -> R<User> {
    let domain = str_field(ctx, u, "domain")?;
    let id = str_or_int(ctx, u, "id")?.unwrap_or_default();
    let email = str_field(ctx, u, "email")?;
    let name = str_field(ctx, u, "username")?;
    Ok(User {
        id,
        name,
        email,
        domain,
    })
}

/// Decodes a v2 metadata root (`{"metadata": …}`).
pub(crate) fn decode_metadata(
    root: Obj<'_>,
    base: &RequestBase,
    cfg: &DecodeConfig,
) -> R<Metadata> {
    let m = match obj(root, "metadata")? {
        Some(m)
            if is_set_known(
                m,
                Some(&[
                    "labels", "service", "cloud", "system", "user", "network", "process",
                ]),
            ) =>
        {
            m
        }
        _ => return Err(LineError::Validation("'metadata' required".into())),
    };
    let mut ctx = Ctx::default();
    ctx.push("metadata");
    let mut lbl = None;
    labels(&mut ctx, m, "labels", &mut lbl)?;

    let mut service = Service::default();
    let mut agent = Agent::default();
    match set_obj(m, "service")? {
        Some(s) => {
            ctx.push("service");
            match set_obj(s, "agent")? {
                Some(a) => {
                    ctx.push("agent");
                    agent.activation_method = str_field(&mut ctx, a, "activation_method")?;
                    agent.ephemeral_id = str_field(&mut ctx, a, "ephemeral_id")?;
                    let name = opt_str(a, "name")?;
                    ctx.max1024("name", name);
                    if name == Some("") {
                        ctx.fail(|| "'name': validation rule 'minLength(1)' violated".into());
                    }
                    ctx.required("name", name.is_some());
                    agent.name = name.unwrap_or_default().to_owned();
                    let v = opt_str(a, "version")?;
                    ctx.max1024("version", v);
                    ctx.required("version", v.is_some());
                    agent.version = v.unwrap_or_default().to_owned();
                    ctx.pop();
                }
                None => ctx.required("agent", false),
            }
            service.environment = str_field(&mut ctx, s, "environment")?;
            if let Some(nv) = name_version(&mut ctx, s, "framework", false, false)? {
                service.framework = nv;
            }
            let _ = opt_str(s, "id")?;
            if let Some(nv) = name_version(&mut ctx, s, "language", true, false)? {
                service.language = nv;
            }
            let name = opt_str(s, "name")?;
            ctx.max1024("name", name);
            if name == Some("") {
                ctx.fail(|| "'name': validation rule 'minLength(1)' violated".into());
            }
            ctx.service_name_pattern("name", name);
            ctx.required("name", name.is_some());
            service.name = name.unwrap_or_default().to_owned();
            if let Some(n) = set_obj(s, "node")? {
                ctx.push("node");
                service.node_name = str_field(&mut ctx, n, "configured_name")?;
                ctx.pop();
            }
            if let Some(nv) = name_version(&mut ctx, s, "runtime", true, true)? {
                service.runtime = nv;
            }
            service.version = str_field(&mut ctx, s, "version")?;
            ctx.pop();
        }
        None => ctx.required("service", false),
    }

    let mut sh = Shared::default();
    if let Some(c) = set_obj(m, "cloud")? {
        ctx.push("cloud");
        let cl = &mut sh.cloud;
        if let Some(a) = set_obj(c, "account")? {
            ctx.push("account");
            cl.account_id = str_field(&mut ctx, a, "id")?;
            cl.account_name = str_field(&mut ctx, a, "name")?;
            ctx.pop();
        }
        cl.availability_zone = str_field(&mut ctx, c, "availability_zone")?;
        if let Some(a) = set_obj(c, "instance")? {
            ctx.push("instance");
            cl.instance_id = str_field(&mut ctx, a, "id")?;
            cl.instance_name = str_field(&mut ctx, a, "name")?;
            ctx.pop();
        }
        cl.machine_type = nested_str(&mut ctx, c, "machine", "type")?;
        if let Some(a) = set_obj(c, "project")? {
            ctx.push("project");
            cl.project_id = str_field(&mut ctx, a, "id")?;
            cl.project_name = str_field(&mut ctx, a, "name")?;
            ctx.pop();
        }
        let p = opt_str(c, "provider")?;
        ctx.max1024("provider", p);
        ctx.required("provider", p.is_some());
        cl.provider = p.unwrap_or_default().to_owned();
        cl.region = str_field(&mut ctx, c, "region")?;
        cl.service_name = nested_str(&mut ctx, c, "service", "name")?;
        ctx.pop();
    }
    if let Some(s) = set_obj(m, "system")? {
        ctx.push("system");
        sh.host_architecture = str_field(&mut ctx, s, "architecture")?;
        let configured = opt_str(s, "configured_hostname")?;
        ctx.max1024("configured_hostname", configured);
        sh.container_id = nested_str(&mut ctx, s, "container", "id")?;
        let detected = opt_str(s, "detected_hostname")?;
        ctx.max1024("detected_hostname", detected);
        let deprecated = opt_str(s, "hostname")?;
        ctx.max1024("hostname", deprecated);
        if let Some(k) = set_obj(s, "kubernetes")? {
            ctx.push("kubernetes");
            sh.k8s_namespace = str_field(&mut ctx, k, "namespace")?;
            sh.k8s_node_name = nested_str(&mut ctx, k, "node", "name")?;
            if let Some(p) = set_obj(k, "pod")? {
                ctx.push("pod");
                sh.k8s_pod_name = str_field(&mut ctx, p, "name")?;
                sh.k8s_pod_uid = str_field(&mut ctx, p, "uid")?;
                ctx.pop();
            }
            ctx.pop();
        }
        sh.host_os_platform = str_field(&mut ctx, s, "platform")?;
        sh.host_id = str_field(&mut ctx, s, "host_id")?;
        sh.host_name = configured.unwrap_or_default().to_owned();
        if configured.is_none() && detected.is_none() {
            sh.host_hostname = deprecated.unwrap_or_default().to_owned();
        } else {
            sh.host_hostname = detected.unwrap_or_default().to_owned();
        }
        ctx.pop();
    }
    let mut user = User::default();
    if let Some(u) = set_obj(m, "user")? {
        ctx.push("user");
        user = decode_user(&mut ctx, u)?;
        ctx.pop();
    }
    if let Some(n) = set_obj(m, "network")? {
        ctx.push("network");
        sh.network_connection_type = nested_str(&mut ctx, n, "connection", "type")?;
        ctx.pop();
    }
    if let Some(p) = set_obj(m, "process")? {
        ctx.push("process");
        sh.process_title = str_field(&mut ctx, p, "title")?;
        sh.process_pid = int(p, "pid")?;
        ctx.required("pid", sh.process_pid.is_some());
        sh.process_ppid = int(p, "ppid")?;
        sh.process_args = str_arr(p, "argv")?;
        ctx.pop();
    }
    ctx.finish()?;
    Ok(build_metadata(
        base,
        cfg,
        sh,
        service,
        agent,
        user,
        lbl.unwrap_or_default(),
    ))
}

/// Assembles [`Metadata`] from decoded parts: request base (§3), host
/// fix-ups and node default (§5.2), default environment.
pub(crate) fn build_metadata(
    base: &RequestBase,
    cfg: &DecodeConfig,
    mut sh: Shared,
    mut service: Service,
    agent: Agent,
    user: User,
    labels: Labels,
) -> Metadata {
    if !sh.k8s_node_name.is_empty() {
        sh.host_hostname = sh.k8s_node_name.clone();
    } else if !sh.k8s_pod_name.is_empty()
        || !sh.k8s_pod_uid.is_empty()
        || !sh.k8s_namespace.is_empty()
    {
        sh.host_hostname.clear();
    }
    if sh.host_name.is_empty() && !sh.host_hostname.is_empty() {
        sh.host_name = sh.host_hostname.clone();
    }
    let mut client = Client::default();
    if base.rum {
        client.client_ip = base.client_ip;
        client.source_ip = base.client_ip;
        client.source_port = base.source_port.filter(|p| *p != 0);
        client.nat_ip = base.nat_ip;
        client.user_agent = base.user_agent.clone().unwrap_or_default();
    } else {
        sh.host_ip = base.client_ip;
    }
    if service.node_name.is_empty() {
        service.node_name = node_default(&sh);
    }
    if service.environment.is_empty() {
        service.environment = cfg.default_service_environment.clone();
    }
    Metadata {
        inner: Arc::new(MetaInner {
            base: base.clone(),
            shared: Arc::new(sh),
            service: Arc::new(service),
            agent: Arc::new(agent),
            user: Arc::new(user),
            labels: Arc::new(labels),
            client,
        }),
    }
}

fn node_default(sh: &Shared) -> String {
    if !sh.container_id.is_empty() {
        sh.container_id.clone()
    } else {
        sh.host_name.clone()
    }
}

/// Post-decode defaults every event gets (§1 step 5, §5.2 step 3).
pub(crate) fn finalize(ev: &mut Event, cfg: &DecodeConfig) {
    if ev.service.node_name.is_empty() {
        let d = node_default(&ev.shared);
        if !d.is_empty() {
            Service::make_mut(&mut ev.service).node_name = d;
        }
    }
    if ev.service.environment.is_empty() && !cfg.default_service_environment.is_empty() {
        Service::make_mut(&mut ev.service).environment = cfg.default_service_environment.clone();
    }
}

// ---------------------------------------------------------------------------
// events

/// Decodes one v2 event line and appends the result to `out`.
pub(crate) fn decode_event(
    kind: Kind,
    root: Obj<'_>,
    meta: &Metadata,
    cfg: &DecodeConfig,
    out: &mut Vec<Event>,
) -> R<()> {
    let key = match kind {
        Kind::Transaction => "transaction",
        Kind::Span => "span",
        Kind::Error => "error",
        Kind::Metricset => "metricset",
        Kind::Log => "log",
    };
    let known: Option<&[&str]> = match kind {
        Kind::Transaction => Some(&[
            "marks",
            "timestamp",
            "otel",
            "links",
            "trace_id",
            "id",
            "parent_id",
            "name",
            "type",
            "result",
            "dropped_spans_stats",
            "outcome",
            "faas",
            "session",
            "context",
            "experience",
            "span_count",
            "sample_rate",
            "duration",
            "sampled",
        ]),
        Kind::Span => Some(&[
            "timestamp",
            "otel",
            "id",
            "trace_id",
            "action",
            "name",
            "outcome",
            "child_ids",
            "parent_id",
            "links",
            "stacktrace",
            "type",
            "subtype",
            "transaction_id",
            "composite",
            "context",
            "start",
            "sample_rate",
            "duration",
            "sync",
        ]),
        Kind::Error => Some(&[
            "timestamp",
            "log",
            "culprit",
            "id",
            "parent_id",
            "trace_id",
            "transaction_id",
            "exception",
            "transaction",
            "context",
        ]),
        Kind::Metricset => Some(&[
            "timestamp",
            "samples",
            "span",
            "tags",
            "transaction",
            "service",
            "faas",
        ]),
        Kind::Log => None,
    };
    let o = match obj(root, key)? {
        Some(o) if is_set_known(o, known) => o,
        _ => return Err(LineError::Validation(format!("'{key}' required"))),
    };
    let mut ctx = Ctx::default();
    ctx.push(key);
    let ev = match kind {
        Kind::Transaction => Some(transaction(&mut ctx, o, meta)?),
        Kind::Span => Some(span(&mut ctx, o, meta)?),
        Kind::Error => Some(error(&mut ctx, o, meta)?),
        Kind::Metricset => metricset(&mut ctx, o, meta)?,
        Kind::Log => Some(log(&mut ctx, o, meta)?),
    };
    ctx.finish()?;
    if let Some(mut ev) = ev {
        finalize(&mut ev, cfg);
        out.push(ev);
    }
    Ok(())
}

pub(crate) fn merge_labels(ev: &mut Event, l: Option<Labels>) {
    if let Some(l) = l {
        if l.is_empty() {
            return;
        }
        let dst = Arc::make_mut(&mut ev.labels);
        for (k, v) in l.strings {
            dst.set_string(&k, v);
        }
        for (k, v) in l.numbers {
            dst.set_number(&k, v);
        }
    }
}

fn links(ctx: &mut Ctx, o: Obj<'_>) -> R<Vec<Link>> {
    let Some(a) = arr(o, "links")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let l = match v {
            V::Object(l) if l.values().any(is_set) => l,
            V::Object(_) | V::Static(StaticNode::Null) => {
                ctx.fail(|| "links slice element required".into());
                continue;
            }
            _ => return Err(LineError::Decode("links: expected object".into())),
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

fn faas(o: Obj<'_>) -> R<Option<Box<Faas>>> {
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

fn frames(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<Vec<Frame>> {
    let Some(a) = arr(o, k)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        let f = match v {
            V::Object(f) if f.values().any(is_set) => f,
            V::Object(_) | V::Static(StaticNode::Null) => {
                ctx.fail(|| format!("{k} slice element required"));
                continue;
            }
            _ => return Err(LineError::Decode(format!("{k}: expected object"))),
        };
        // one pass over the frame's keys (hot path); later duplicates win
        let mut fr = Frame::default();
        let (mut has_class, mut has_file) = (false, false);
        for (key, v) in f.iter() {
            match key {
                "filename" => {
                    let s = v_str(key, v)?;
                    has_file = s.is_some();
                    fr.filename = s.unwrap_or_default().to_owned();
                }
                "classname" => {
                    let s = v_str(key, v)?;
                    has_class = s.is_some();
                    fr.classname = s.unwrap_or_default().to_owned();
                }
                "abs_path" => fr.abs_path = v_str(key, v)?.unwrap_or_default().to_owned(),
                "context_line" => fr.context_line = v_str(key, v)?.unwrap_or_default().to_owned(),
                "function" => fr.function = v_str(key, v)?.unwrap_or_default().to_owned(),
                "module" => fr.module = v_str(key, v)?.unwrap_or_default().to_owned(),
                "post_context" => fr.post_context = v_str_arr(key, v)?,
                "pre_context" => fr.pre_context = v_str_arr(key, v)?,
                "lineno" => fr.lineno = v_int(key, v)?,
                "colno" => fr.colno = v_int(key, v)?,
                "library_frame" => fr.library_frame = v_bool(key, v)?.unwrap_or(false),
                "vars" => fr.vars = v_json_obj(key, v)?,
                _ => {}
            }
        }
        if !has_class && !has_file {
            ctx.push(k);
            ctx.fail(|| "requires at least one of the fields 'classname;filename'".into());
            ctx.pop();
        }
        out.push(fr);
    }
    Ok(out)
}

/// Parses `ip`, `ip:port` or `[ip]:port`.
fn parse_addr(s: &str) -> Option<(IpAddr, Option<u16>)> {
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

pub(crate) fn header<'h>(h: &'h Headers, name: &str) -> Option<&'h [String]> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Client address from forwarding headers (§3 precedence).
fn forwarded_addr(h: &Headers) -> Option<(IpAddr, Option<u16>)> {
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

fn service_target_derive(resource: &str) -> (String, String) {
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
        (first.to_owned(), second.unwrap_or("").to_owned())
    } else {
        (String::new(), resource.to_owned())
    }
}

/// `context.service` (§5.4). Returns whether `target.type` was sent.
fn context_service(ctx: &mut Ctx, c: Obj<'_>, ev: &mut Event) -> R<bool> {
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
    let fw = name_version_opt(ctx, s, "framework")?;
    let _ = opt_str(s, "id")?;
    let lang = name_version_opt(ctx, s, "language")?;
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
    let rt = name_version_opt(ctx, s, "runtime")?;
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
                ty.unwrap_or_default().to_owned(),
                nm.unwrap_or_default().to_owned(),
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
    for (dst, src) in [
        (&mut sv.framework, fw),
        (&mut sv.language, lang),
        (&mut sv.runtime, rt),
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
    if let Some((id, n, v)) = origin {
        sv.origin_id = id;
        sv.origin_name = n;
        sv.origin_version = v;
    }
    if target.is_some() {
        sv.target = target;
    }
    Ok(target_type_sent)
}

type OptNv = Option<(Option<String>, Option<String>)>;

fn name_version_opt(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<OptNv> {
    let Some(m) = set_obj(o, k)? else {
        return Ok(None);
    };
    ctx.push(k);
    let n = opt_str(m, "name")?;
    ctx.max1024("name", n);
    let v = opt_str(m, "version")?;
    ctx.max1024("version", v);
    ctx.pop();
    Ok(Some((n.map(str::to_owned), v.map(str::to_owned))))
}

fn message_ctx(ctx: &mut Ctx, c: Obj<'_>) -> R<Option<Message>> {
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

fn url_port(ctx: &mut Ctx, u: Obj<'_>) -> R<Option<i64>> {
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

/// Parses a page URL into `url.*` (§5.7).
pub(crate) fn page_url(raw: &str) -> Url {
    let mut out = Url {
        original: raw.chars().take(1024).collect(),
        ..Default::default()
    };
    if let Ok(u) = url::Url::parse(raw) {
        out.scheme = u.scheme().to_owned();
        out.full = u.as_str().to_owned();
        out.domain = u.host_str().unwrap_or_default().to_owned();
        out.path = u.path().to_owned();
        out.query = u.query().unwrap_or_default().to_owned();
        out.fragment = u.fragment().unwrap_or_default().to_owned();
        out.port = u.port().map(i64::from);
    } else if out.scheme.is_empty() {
        out.scheme = "http".into();
    }
    out
}

/// Transaction/error `context` (§5.4–§5.7). Returns (response status code, message ctx, custom).
fn context(ctx: &mut Ctx, o: Obj<'_>, ev: &mut Event) -> R<(Option<i64>, Option<Json>)> {
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
        let user = decode_user(ctx, u)?;
        ctx.pop();
        if ["id", "username", "email", "domain"]
            .iter()
            .any(|k| get(u, k).is_some())
        {
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
            let hostname = str_field(ctx, u, "hostname")?;
            let pathname = str_field(ctx, u, "pathname")?;
            let protocol = str_field(ctx, u, "protocol")?;
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
                scheme: protocol
                    .strip_suffix(':')
                    .map(str::to_owned)
                    .unwrap_or(protocol),
                port,
            });
        }
        let version = str_field(ctx, r, "http_version")?;
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

        // client / source (§5.5)
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
        http.request_method = method.unwrap_or_default().to_owned();
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

fn cloud_origin_slot(ev: &mut Event, v: [String; 4]) {
    if let Body::Transaction(t) = &mut ev.body {
        t.cloud_origin = Some(v);
    }
}

fn message_slot(ev: &mut Event, m: Message) {
    match &mut ev.body {
        Body::Transaction(t) => t.message = Some(m),
        Body::Span(s) => s.message = Some(m),
        _ => {}
    }
}

/// OTel bridge attributes (§6.1, partial): returns (span_kind, profiler ids) and folds
/// remaining attributes into labels.
fn otel(o: Obj<'_>, ev: &mut Event) -> R<Option<(String, Vec<String>)>> {
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

fn transaction(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
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

/// `representative_count` from `sample_rate` (§12.2).
pub(crate) fn rep_count(sample_rate: Option<f64>, default_one: bool) -> Option<f64> {
    match sample_rate {
        None => default_one.then_some(1.0),
        Some(r) if r > 0.0 => Some(1.0 / r),
        Some(_) => None,
    }
}

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

fn span(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
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

fn exception(ctx: &mut Ctx, x: Obj<'_>, parent: Option<usize>, out: &mut Vec<Exception>) -> R<()> {
    if get(x, "message").is_none() && get(x, "type").is_none() {
        ctx.fail(|| "requires at least one of the fields 'message;type'".into());
    }
    let attributes = json_obj(x, "attributes")?;
    let code = str_or_int(ctx, x, "code")?.unwrap_or_default();
    let idx = out.len();
    out.push(Exception {
        attributes,
        code,
        parent,
        ..Default::default()
    });
    if let Some(causes) = arr(x, "cause")? {
        for c in causes {
            match c {
                V::Object(c) if c.values().any(is_set) => {
                    ctx.push("cause");
                    exception(ctx, c, Some(idx), out)?;
                    ctx.pop();
                }
                V::Object(_) | V::Static(StaticNode::Null) => {
                    ctx.fail(|| "cause slice element required".into())
                }
                _ => return Err(LineError::Decode("cause: expected object".into())),
            }
        }
    }
    let st = frames(ctx, x, "stacktrace")?;
    let message = string(x, "message")?;
    let module = str_field(ctx, x, "module")?;
    let ty = str_field(ctx, x, "type")?;
    let handled = boolean(x, "handled")?;
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
    if let Some(ts) = timestamp(o, "timestamp")? {
        ev.timestamp_ns = ts;
    }
    let exc = set_obj(o, "exception")?;
    let lg = set_obj(o, "log")?;
    if exc.is_none() && lg.is_none() {
        ctx.fail(|| "requires at least one of the fields 'exception;log'".into());
    }
    if let Some(l) = lg {
        ctx.push("log");
        let level = str_field(ctx, l, "level")?;
        let logger_name = str_field(ctx, l, "logger_name")?;
        let message = opt_str(l, "message")?;
        ctx.required("message", message.is_some());
        let param_message = str_field(ctx, l, "param_message")?;
        let stacktrace = frames(ctx, l, "stacktrace")?;
        ctx.pop();
        er.log = Some(ErrorLog {
            message: message.unwrap_or_default().to_owned(),
            level: if level.is_empty() {
                "error".into()
            } else {
                level
            },
            logger_name,
            param_message,
            stacktrace,
        });
    }
    er.culprit = str_field(ctx, o, "culprit")?;
    let id = opt_str(o, "id")?;
    ctx.max1024("id", id);
    ctx.required("id", id.is_some());
    let parent_id = opt_str(o, "parent_id")?;
    let trace_id = opt_str(o, "trace_id")?;
    let transaction_id = opt_str(o, "transaction_id")?;
    ctx.max1024("parent_id", parent_id);
    if parent_id.is_none() {
        if transaction_id.is_some() {
            ctx.fail(|| "'parent_id' required when 'transaction_id' is set".into());
        } else if trace_id.is_some() {
            ctx.fail(|| "'parent_id' required when 'trace_id' is set".into());
        }
    }
    ctx.max1024("trace_id", trace_id);
    if trace_id.is_none() {
        if transaction_id.is_some() {
            ctx.fail(|| "'trace_id' required when 'transaction_id' is set".into());
        } else if parent_id.is_some() {
            ctx.fail(|| "'trace_id' required when 'parent_id' is set".into());
        }
    }
    ctx.max1024("transaction_id", transaction_id);
    if let Some(x) = exc {
        ctx.push("exception");
        exception(ctx, x, None, &mut er.exceptions)?;
        ctx.pop();
    }
    if let Some(t) = set_obj(o, "transaction")? {
        ctx.push("transaction");
        er.transaction_name = str_field(ctx, t, "name")?;
        er.transaction_type = str_field(ctx, t, "type")?;
        er.transaction_sampled = boolean(t, "sampled")?;
        ctx.pop();
    }
    ev.body = Body::Error(Box::default());
    let (_, custom) = context(ctx, o, &mut ev)?;
    er.custom = custom;
    er.id = id.unwrap_or_default().to_owned();
    ev.parent_id = parent_id.unwrap_or_default().to_owned();
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    er.transaction_id = transaction_id.unwrap_or_default().to_owned();
    er.span_id = er.transaction_id.clone();
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

fn metricset(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Option<Event>> {
    let mut ev = Event::new(meta, Body::Metricset(Box::default()));
    let mut ms = Metricset::default();
    if let Some(ts) = timestamp(o, "timestamp")? {
        ev.timestamp_ns = ts;
    }
    let samples = obj(o, "samples")?;
    match samples {
        Some(s) if !s.is_empty() => {
            for (k, v) in s.iter() {
                let so = match v {
                    V::Object(so) => so,
                    V::Static(StaticNode::Null) => {
                        ctx.push("samples");
                        ctx.fail(|| "requires at least one of the fields 'value;values'".into());
                        ctx.pop();
                        continue;
                    }
                    _ => return Err(LineError::Decode("samples: expected object".into())),
                };
                let smp = Sample {
                    name: k.to_string(),
                    type_: string(so, "type")?,
                    unit: string(so, "unit")?,
                    values: match arr(so, "values")? {
                        Some(a) => a
                            .iter()
                            .map(|v| {
                                v.cast_f64().ok_or_else(|| {
                                    LineError::Decode("values: expected number".into())
                                })
                            })
                            .collect::<R<Vec<f64>>>()?,
                        None => Vec::new(),
                    },
                    counts: match arr(so, "counts")? {
                        Some(a) => a
                            .iter()
                            .map(|v| match v {
                                V::Static(StaticNode::I64(i)) => Ok(i),
                                V::Static(StaticNode::U64(i)) => Ok(i as i64),
                                _ => Err(LineError::Decode("counts: expected integer".into())),
                            })
                            .collect::<R<Vec<i64>>>()?,
                        None => Vec::new(),
                    },
                    value: 0.0,
                };
                let value = num(so, "value")?;
                ctx.push("samples");
                if value.is_none() && smp.values.is_empty() {
                    ctx.fail(|| "requires at least one of the fields 'value;values'".into());
                }
                if smp.values.is_empty() && !smp.counts.is_empty() {
                    ctx.fail(|| "'values' required when 'counts' is set".into());
                }
                if smp.counts.is_empty() && !smp.values.is_empty() {
                    ctx.fail(|| "'counts' required when 'values' is set".into());
                }
                ctx.pop();
                if k.contains('*') || k.contains('"') {
                    ctx.fail(|| {
                        "'samples': validation rule 'patternKeys(patternNoAsteriskQuote)' violated"
                            .into()
                    });
                }
                ms.samples.push(Sample {
                    value: value.unwrap_or(0.0),
                    ..smp
                });
            }
        }
        _ => ctx.required("samples", false),
    }
    let span_ref = set_obj(o, "span")?;
    if let Some(s) = span_ref {
        ctx.push("span");
        ms.span_subtype = str_field(ctx, s, "subtype")?;
        ms.span_type = str_field(ctx, s, "type")?;
        ctx.pop();
    }
    let mut tags = None;
    labels(ctx, o, "tags", &mut tags)?;
    merge_labels(&mut ev, tags);
    let tx_ref = set_obj(o, "transaction")?;
    if let Some(t) = tx_ref {
        ctx.push("transaction");
        ms.transaction_name = str_field(ctx, t, "name")?;
        ms.transaction_type = str_field(ctx, t, "type")?;
        ctx.pop();
    }
    if let Some(s) = set_obj(o, "service")? {
        ctx.push("service");
        let name = opt_str(s, "name")?;
        ctx.max1024("name", name);
        let version = opt_str(s, "version")?;
        ctx.max1024("version", version);
        ctx.pop();
        if let Some(n) = name {
            let sv = Service::make_mut(&mut ev.service);
            sv.name = n.to_owned();
            sv.version = version.unwrap_or_default().to_owned();
        }
    }
    ev.faas = faas(o)?;
    if ctx.failed() {
        return Ok(None);
    }
    ms.has_refs = tx_ref.is_some() || span_ref.is_some();
    if tx_ref.is_some() {
        ms.name = "span_breakdown".into();
        for s in &ms.samples {
            match s.name.as_str() {
                "span.self_time.count" => ms.self_time_count = Some(s.value as i64),
                "span.self_time.sum.us" => {
                    ms.self_time_sum_us = Some(((s.value * 1000.0) as i64) / 1000)
                }
                _ => {}
            }
        }
        ms.samples.clear();
        if span_ref.is_none() || (ms.self_time_count.is_none() && ms.self_time_sum_us.is_none()) {
            return Ok(None);
        }
    } else {
        ms.name = "app".into();
        for s in ms.samples.iter_mut() {
            if !matches!(
                s.type_.as_str(),
                "gauge" | "counter" | "histogram" | "summary"
            ) {
                s.type_.clear();
            }
        }
    }
    ev.body = Body::Metricset(Box::new(ms));
    Ok(Some(ev))
}

/// A log field sent flat (`"a.b"`) or nested (`{"a":{"b":…}}`); nested wins
/// when it has the right type (§10).
fn log_str(o: Obj<'_>, flat: &str, nested: &[&str]) -> R<Option<String>> {
    let mut v = opt_str(o, flat)?.map(str::to_owned);
    if let Some(V::String(s)) = nested_val(o, nested) {
        v = Some(s.to_string());
    }
    Ok(v)
}

fn nested_val<'v>(o: Obj<'v>, path: &[&str]) -> Option<V<'v>> {
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

fn log(ctx: &mut Ctx, o: Obj<'_>, meta: &Metadata) -> R<Event> {
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
