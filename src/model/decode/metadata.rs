//! TODO

use super::fields::*;
use super::*;
use crate::model::event::*;
use std::sync::Arc;

// ---------------------------------------------------------------------------
// metadata

pub(crate) fn name_version(
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

pub(crate) fn decode_user(ctx: &mut Ctx, u: Obj<'_>) -> R<User> {
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

pub(crate) fn node_default(sh: &Shared) -> String {
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

pub(crate) fn rum_nv(
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

pub(crate) fn to_nv(v: Option<(Option<String>, Option<String>)>) -> NameVersion {
    let (n, v) = v.unwrap_or_default();
    NameVersion {
        name: n.unwrap_or_default(),
        version: v.unwrap_or_default(),
    }
}

pub(crate) fn rum_user(ctx: &mut Ctx, u: Obj<'_>) -> R<(User, bool)> {
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
pub(crate) fn rum_metadata(root: Obj<'_>, base: &RequestBase, cfg: &DecodeConfig) -> R<Metadata> {
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
            service.framework = to_nv(rum_nv(&mut ctx, s, "fw", false, false)?);
            service.language = to_nv(rum_nv(&mut ctx, s, "la", true, false)?);
            let n = opt_str(s, "n")?;
            ctx.max1024("n", n);
            if n == Some("") {
                ctx.fail(|| "'n': validation rule 'minLength(1)' violated".into());
            }
            ctx.service_name_pattern("n", n);
            ctx.required("n", n.is_some());
            service.name = n.unwrap_or_default().to_owned();
            service.runtime = to_nv(rum_nv(&mut ctx, s, "ru", true, true)?);
            service.version = str_field(&mut ctx, s, "ve")?;
            ctx.pop();
        }
        None => ctx.required("se", false),
    }
    let mut u = User::default();
    if let Some(uo) = set_obj(m, "u")? {
        ctx.push("u");
        u = rum_user(&mut ctx, uo)?.0;
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
