//! The metadata line (v2 `metadata`, RUM v3 `m`): one set of field rules,
//! run under each dialect's keys, and the assembly of [`Metadata`] from the
//! request and the decoded parts. Also the rules shared with event contexts:
//! name/version pairs and users.
//!
//! Invariants: fields are checked in upstream struct order (the same for both
//! dialects; v3 simply lacks the v2-only sections and fields); the first
//! violation wins. Every event of the request starts from the one
//! [`Metadata`] built here (shared `Arc`s, copied on write by overrides).

use super::fields::*;
use super::*;
use crate::model::event::*;
use std::sync::Arc;

/// A `{name, version}` object as sent: each part `None` when absent.
pub(crate) type OptNv = Option<(Option<String>, Option<String>)>;

/// The keys of a name/version object (`name`/`version`, v3 `n`/`ve`).
pub(crate) struct NvKeys {
    pub name: &'static str,
    pub version: &'static str,
}

pub(crate) const NV_V2: NvKeys = NvKeys {
    name: "name",
    version: "version",
};
pub(crate) const NV_V3: NvKeys = NvKeys {
    name: "n",
    version: "ve",
};

/// The keys of a user object, in upstream order.
pub(crate) struct UserKeys {
    pub domain: &'static str,
    pub id: &'static str,
    pub email: &'static str,
    pub name: &'static str,
}

pub(crate) const USER_V2: UserKeys = UserKeys {
    domain: "domain",
    id: "id",
    email: "email",
    name: "username",
};
pub(crate) const USER_V3: UserKeys = UserKeys {
    domain: "ud",
    id: "id",
    email: "em",
    name: "un",
};

/// One dialect's metadata keys. `None` marks a field the dialect lacks.
pub(crate) struct MetadataDialect {
    pub root: &'static str,
    /// Keys that make the root "set" (unknown keys do not).
    pub known: &'static [&'static str],
    pub labels: &'static str,
    pub service: &'static str,
    pub agent: &'static str,
    pub agent_activation_method: Option<&'static str>,
    pub agent_ephemeral_id: Option<&'static str>,
    pub environment: &'static str,
    pub framework: &'static str,
    pub service_id: Option<&'static str>,
    pub language: &'static str,
    pub node: Option<&'static str>,
    pub runtime: &'static str,
    pub user: &'static str,
    pub network: &'static str,
    pub connection: &'static str,
    pub connection_type: &'static str,
    pub nv: NvKeys,
    pub user_keys: UserKeys,
    /// v2 also carries `cloud`, `system` and `process`.
    pub host_sections: bool,
}

pub(crate) const V2: MetadataDialect = MetadataDialect {
    root: "metadata",
    known: &[
        "labels", "service", "cloud", "system", "user", "network", "process",
    ],
    labels: "labels",
    service: "service",
    agent: "agent",
    agent_activation_method: Some("activation_method"),
    agent_ephemeral_id: Some("ephemeral_id"),
    environment: "environment",
    framework: "framework",
    service_id: Some("id"),
    language: "language",
    node: Some("node"),
    runtime: "runtime",
    user: "user",
    network: "network",
    connection: "connection",
    connection_type: "type",
    nv: NV_V2,
    user_keys: USER_V2,
    host_sections: true,
};

pub(crate) const V3: MetadataDialect = MetadataDialect {
    root: "m",
    known: &["se", "u", "l", "n"],
    labels: "l",
    service: "se",
    agent: "a",
    agent_activation_method: None,
    agent_ephemeral_id: None,
    environment: "en",
    framework: "fw",
    service_id: None,
    language: "la",
    node: None,
    runtime: "ru",
    user: "u",
    network: "n",
    connection: "c",
    connection_type: "t",
    nv: NV_V3,
    user_keys: USER_V3,
    host_sections: false,
};

/// A name/version object under `k`; `name_req`/`ver_req` make a part required.
pub(crate) fn name_version(
    ctx: &mut Ctx,
    o: Obj<'_>,
    k: &'static str,
    keys: &NvKeys,
    name_req: bool,
    ver_req: bool,
) -> R<OptNv> {
    let Some(m) = set_obj(o, k)? else {
        return Ok(None);
    };
    ctx.push(k);
    let n = opt_str(m, keys.name)?;
    ctx.max1024(keys.name, n);
    if name_req {
        ctx.required(keys.name, n.is_some());
    }
    let v = opt_str(m, keys.version)?;
    ctx.max1024(keys.version, v);
    if ver_req {
        ctx.required(keys.version, v.is_some());
    }
    ctx.pop();
    Ok(Some((n.map(str::to_owned), v.map(str::to_owned))))
}

/// The decoded pair with absent parts empty.
pub(crate) fn to_nv(v: OptNv) -> NameVersion {
    let (n, v) = v.unwrap_or_default();
    NameVersion {
        name: n.unwrap_or_default(),
        version: v.unwrap_or_default(),
    }
}

/// A user object; the flag says whether any of its fields was sent.
pub(crate) fn user(ctx: &mut Ctx, u: Obj<'_>, k: &UserKeys) -> R<(User, bool)> {
    let domain = str_field(ctx, u, k.domain)?;
    let id = str_or_int(ctx, u, k.id)?;
    let email = str_field(ctx, u, k.email)?;
    let name = str_field(ctx, u, k.name)?;
    let any = [k.id, k.name, k.email, k.domain]
        .iter()
        .any(|key| get(u, key).is_some());
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

/// A required, non-empty name: max 1024 characters, `minLength(1)`, and
/// for service names the allowed-characters pattern.
fn required_name<'v>(ctx: &mut Ctx, o: Obj<'v>, k: &str, pattern: bool) -> R<Option<&'v str>> {
    let name = opt_str(o, k)?;
    ctx.max1024(k, name);
    if name == Some("") {
        ctx.fail(|| format!("'{k}': validation rule 'minLength(1)' violated"));
    }
    if pattern {
        ctx.service_name_pattern(k, name);
    }
    ctx.required(k, name.is_some());
    Ok(name)
}

fn agent(ctx: &mut Ctx, a: Obj<'_>, d: &MetadataDialect) -> R<Agent> {
    let mut agent = Agent::default();
    if let Some(k) = d.agent_activation_method {
        agent.activation_method = str_field(ctx, a, k)?;
    }
    if let Some(k) = d.agent_ephemeral_id {
        agent.ephemeral_id = str_field(ctx, a, k)?;
    }
    agent.name = required_name(ctx, a, d.nv.name, false)?
        .unwrap_or_default()
        .to_owned();
    let v = opt_str(a, d.nv.version)?;
    ctx.max1024(d.nv.version, v);
    ctx.required(d.nv.version, v.is_some());
    agent.version = v.unwrap_or_default().to_owned();
    Ok(agent)
}

fn service(ctx: &mut Ctx, s: Obj<'_>, d: &MetadataDialect) -> R<(Service, Agent)> {
    let mut service = Service::default();
    let mut agent = Agent::default();
    match set_obj(s, d.agent)? {
        Some(a) => {
            ctx.push(d.agent);
            agent = self::agent(ctx, a, d)?;
            ctx.pop();
        }
        None => ctx.required(d.agent, false),
    }
    service.environment = str_field(ctx, s, d.environment)?;
    service.framework = to_nv(name_version(ctx, s, d.framework, &d.nv, false, false)?);
    if let Some(k) = d.service_id {
        let _ = opt_str(s, k)?;
    }
    service.language = to_nv(name_version(ctx, s, d.language, &d.nv, true, false)?);
    service.name = required_name(ctx, s, d.nv.name, true)?
        .unwrap_or_default()
        .to_owned();
    if let Some(k) = d.node {
        if let Some(n) = set_obj(s, k)? {
            ctx.push(k);
            service.node_name = str_field(ctx, n, "configured_name")?;
            ctx.pop();
        }
    }
    service.runtime = to_nv(name_version(ctx, s, d.runtime, &d.nv, true, true)?);
    service.version = str_field(ctx, s, d.nv.version)?;
    Ok((service, agent))
}

/// v2 `cloud`.
fn cloud(ctx: &mut Ctx, c: Obj<'_>, cl: &mut Cloud) -> R<()> {
    if let Some(a) = set_obj(c, "account")? {
        ctx.push("account");
        cl.account_id = str_field(ctx, a, "id")?;
        cl.account_name = str_field(ctx, a, "name")?;
        ctx.pop();
    }
    cl.availability_zone = str_field(ctx, c, "availability_zone")?;
    if let Some(a) = set_obj(c, "instance")? {
        ctx.push("instance");
        cl.instance_id = str_field(ctx, a, "id")?;
        cl.instance_name = str_field(ctx, a, "name")?;
        ctx.pop();
    }
    cl.machine_type = nested_str(ctx, c, "machine", "type")?;
    if let Some(a) = set_obj(c, "project")? {
        ctx.push("project");
        cl.project_id = str_field(ctx, a, "id")?;
        cl.project_name = str_field(ctx, a, "name")?;
        ctx.pop();
    }
    let p = opt_str(c, "provider")?;
    ctx.max1024("provider", p);
    ctx.required("provider", p.is_some());
    cl.provider = p.unwrap_or_default().to_owned();
    cl.region = str_field(ctx, c, "region")?;
    cl.service_name = nested_str(ctx, c, "service", "name")?;
    Ok(())
}

/// v2 `system`: host and Kubernetes fields. The host name is the configured
/// one; the hostname the detected one, or the deprecated `hostname` when
/// neither configured nor detected is sent.
fn system(ctx: &mut Ctx, s: Obj<'_>, sh: &mut Shared) -> R<()> {
    sh.host_architecture = str_field(ctx, s, "architecture")?;
    let configured = opt_str(s, "configured_hostname")?;
    ctx.max1024("configured_hostname", configured);
    sh.container_id = nested_str(ctx, s, "container", "id")?;
    let detected = opt_str(s, "detected_hostname")?;
    ctx.max1024("detected_hostname", detected);
    let deprecated = opt_str(s, "hostname")?;
    ctx.max1024("hostname", deprecated);
    if let Some(k) = set_obj(s, "kubernetes")? {
        ctx.push("kubernetes");
        sh.k8s_namespace = str_field(ctx, k, "namespace")?;
        sh.k8s_node_name = nested_str(ctx, k, "node", "name")?;
        if let Some(p) = set_obj(k, "pod")? {
            ctx.push("pod");
            sh.k8s_pod_name = str_field(ctx, p, "name")?;
            sh.k8s_pod_uid = str_field(ctx, p, "uid")?;
            ctx.pop();
        }
        ctx.pop();
    }
    sh.host_os_platform = str_field(ctx, s, "platform")?;
    sh.host_id = str_field(ctx, s, "host_id")?;
    sh.host_name = configured.unwrap_or_default().to_owned();
    sh.host_hostname = if configured.is_none() && detected.is_none() {
        deprecated
    } else {
        detected
    }
    .unwrap_or_default()
    .to_owned();
    Ok(())
}

/// v2 `process`.
fn process(ctx: &mut Ctx, p: Obj<'_>, sh: &mut Shared) -> R<()> {
    sh.process_title = str_field(ctx, p, "title")?;
    sh.process_pid = int(p, "pid")?;
    ctx.required("pid", sh.process_pid.is_some());
    sh.process_ppid = int(p, "ppid")?;
    sh.process_args = str_arr(p, "argv")?;
    Ok(())
}

/// Runs `f` on the set object under `k` with `k` pushed on the path.
fn section<'v>(
    ctx: &mut Ctx,
    o: Obj<'v>,
    k: &'static str,
    f: impl FnOnce(&mut Ctx, Obj<'v>) -> R<()>,
) -> R<()> {
    if let Some(s) = set_obj(o, k)? {
        ctx.push(k);
        f(ctx, s)?;
        ctx.pop();
    }
    Ok(())
}

/// Decodes a metadata root (`{"metadata": …}` or `{"m": …}`).
pub(crate) fn decode_metadata(
    root: Obj<'_>,
    base: &RequestBase,
    cfg: &DecodeConfig,
    d: &MetadataDialect,
) -> R<Metadata> {
    let m = match obj(root, d.root)? {
        Some(m) if is_set_known(m, Some(d.known)) => m,
        _ => return Err(LineError::Validation(format!("'{}' required", d.root))),
    };
    let mut ctx = Ctx::default();
    ctx.push(d.root);
    let mut lbl = None;
    labels(&mut ctx, m, d.labels, &mut lbl)?;
    let (mut service, mut agent) = Default::default();
    match set_obj(m, d.service)? {
        Some(s) => {
            ctx.push(d.service);
            (service, agent) = self::service(&mut ctx, s, d)?;
            ctx.pop();
        }
        None => ctx.required(d.service, false),
    }
    let mut sh = Shared::default();
    if d.host_sections {
        section(&mut ctx, m, "cloud", |ctx, c| cloud(ctx, c, &mut sh.cloud))?;
        section(&mut ctx, m, "system", |ctx, s| system(ctx, s, &mut sh))?;
    }
    let mut u = User::default();
    section(&mut ctx, m, d.user, |ctx, o| {
        u = user(ctx, o, &d.user_keys)?.0;
        Ok(())
    })?;
    section(&mut ctx, m, d.network, |ctx, n| {
        sh.network_connection_type = nested_str(ctx, n, d.connection, d.connection_type)?;
        Ok(())
    })?;
    if d.host_sections {
        section(&mut ctx, m, "process", |ctx, p| process(ctx, p, &mut sh))?;
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

/// Assembles [`Metadata`] from decoded parts: request base, host
/// fix-ups, node default and default environment (docs/intake.md, Metadata).
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

/// Defaults every event gets after decoding: the service node name (container
/// id, else host name) and the default environment.
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
