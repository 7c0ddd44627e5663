//! Configuration: one place for every setting and how the layers combine.
//!
//! Layers, later wins (maps merge key by key, lists and scalars replace):
//! 1. defaults in [`settings`] and the embedded `pipelines/default.yml`;
//! 2. config files (`-c FILE`, repeatable; `apm-rs.yml` in the working
//!    directory when no `-c` is given and it exists);
//! 3. the pipeline profile picked with `--pipeline NAME|PATH`;
//! 4. environment variables `APM_RS__<KEY>__<KEY>…` (segments upper-cased,
//!    `-` written `_`, so `APM_RS__APM_SERVER__HOST`), values read as YAML;
//! 5. `-E key=value` flags (value read as YAML, objects merged).
//!
//! Dotted keys and nested maps are equivalent in every layer, and `${VAR}`,
//! `${VAR:default}`, `${VAR:?message}` are expanded in string values (`$${`
//! escapes). Invariants: an unknown key or an invalid value is an error that
//! names the key; secrets are [`types::Secret`] and never print.

pub mod outputs;
pub mod settings;
pub mod types;

pub use outputs::{ConsoleOutput, KafkaOutput, RedisOutput};
pub use settings::*;
pub use types::{ByteSize, GoDuration, HeaderMap, HeaderValues, Secret};

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Profiles shipped in `pipelines/`, embedded so `--pipeline NAME` works anywhere.
pub const PROFILES: &[(&str, &str)] = &[
    ("default", include_str!("../../pipelines/default.yml")),
    (
        "high-throughput",
        include_str!("../../pipelines/high-throughput.yml"),
    ),
    ("low-memory", include_str!("../../pipelines/low-memory.yml")),
];

/// Environment variable prefix of layer 4.
pub const ENV_PREFIX: &str = "APM_RS__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown pipeline profile {0:?} (not a shipped profile name nor a readable file)")]
    UnknownProfile(String),
    #[error("{0}")]
    Env(String),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// What the command line and environment ask for.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `-c FILE`, in order.
    pub files: Vec<PathBuf>,
    /// `--pipeline NAME|PATH`.
    pub pipeline: Option<String>,
    /// `-E key=value`, in order.
    pub overrides: Vec<String>,
    /// Read `APM_RS__*` variables (off in tests that must not see the host's environment).
    pub read_env: bool,
}

/// Loads, merges and validates the configuration.
pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder();
    let mut push = |tree: Value| -> Result<(), ConfigError> {
        let tree = expand_env_tree(tree)?;
        let tree = normalize(tree);
        builder = std::mem::take(&mut builder).add_source(config::File::from_str(
            &tree.to_string(),
            config::FileFormat::Json,
        ));
        Ok(())
    };

    push(parse_yaml("pipelines/default.yml", PROFILES[0].1)?)?;

    let mut files = opts.files.clone();
    if files.is_empty() && Path::new("apm-rs.yml").exists() {
        files.push(PathBuf::from("apm-rs.yml"));
    }
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
            path: f.clone(),
            source,
        })?;
        let origin = f.display().to_string();
        push(parse_yaml(&origin, &text)?)?;
    }

    if let Some(p) = &opts.pipeline {
        let (origin, text) = profile_text(p)?;
        push(parse_yaml(&origin, &text)?)?;
    }

    if opts.read_env {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        vars.sort();
        for (k, v) in vars {
            let key = env_key(&k);
            let value = parse_yaml(&k, &v)?;
            push(nest(&key, value))?;
        }
    }

    for ov in &opts.overrides {
        let (key, value) = ov
            .split_once('=')
            .ok_or_else(|| invalid(ov, "expected -E key=value"))?;
        let origin = format!("-E {key}");
        let value = parse_yaml(&origin, value)?;
        push(nest(key.trim(), value))?;
    }

    let merged = builder.build().map_err(|e| ConfigError::Parse {
        origin: "configuration".into(),
        message: e.to_string(),
    })?;
    let cfg: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let msg = e.into_inner().to_string();
        // serde reports an unknown field at its parent's path; name the key itself.
        match unknown_field(&msg) {
            Some(field) if key == "." || key.is_empty() => invalid(&field, "unknown setting"),
            Some(field) => invalid(&format!("{key}.{field}"), "unknown setting"),
            None => invalid(&key, msg),
        }
    })?;
    validate(&cfg)?;
    Ok(cfg)
}

/// Loads only built-in defaults plus `overrides` (tests and embedding).
pub fn from_overrides<I, S>(overrides: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    load(&LoadOptions {
        overrides: overrides.into_iter().map(Into::into).collect(),
        ..Default::default()
    })
}

fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn profile_text(p: &str) -> Result<(String, String), ConfigError> {
    if let Some((name, text)) = PROFILES.iter().find(|(n, _)| *n == p) {
        return Ok((format!("pipelines/{name}.yml"), text.to_string()));
    }
    for candidate in [
        PathBuf::from(p),
        Path::new("pipelines").join(format!("{p}.yml")),
    ] {
        if let Ok(text) = std::fs::read_to_string(&candidate) {
            return Ok((candidate.display().to_string(), text));
        }
    }
    Err(ConfigError::UnknownProfile(p.to_string()))
}

fn parse_yaml(origin: &str, text: &str) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string(),
    })
}

/// `APM_RS__APM_SERVER__MAX_EVENT_SIZE` → `apm-server.max_event_size`.
fn env_key(var: &str) -> String {
    var[ENV_PREFIX.len()..]
        .split("__")
        .enumerate()
        .map(|(i, seg)| {
            let s = seg.to_ascii_lowercase();
            if i == 0 && s == "apm_server" {
                "apm-server".to_string()
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Wraps `value` in maps along a dotted `key`.
fn nest(key: &str, value: Value) -> Value {
    key.rsplit('.').fold(value, |acc, seg| {
        let mut m = Map::new();
        m.insert(seg.to_string(), acc);
        Value::Object(m)
    })
}

/// Expands dotted keys into nested maps, merging siblings.
fn normalize(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Value::Object(Map::new());
            for (k, v) in m {
                merge(&mut out, nest(&k, normalize(v)));
            }
            out
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        other => other,
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn expand_env_tree(v: Value) -> Result<Value, ConfigError> {
    Ok(match v {
        Value::String(s) if s.contains('$') => {
            let expanded = expand_env(&s).map_err(ConfigError::Env)?;
            if expanded == s {
                Value::String(s)
            } else {
                // A whole-value reference may carry YAML (lists, numbers).
                serde_yaml_ng::from_str::<Value>(&expanded).unwrap_or(Value::String(expanded))
            }
        }
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| Ok((k, expand_env_tree(v)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(expand_env_tree)
                .collect::<Result<_, _>>()?,
        ),
        other => other,
    })
}

/// Expands `${VAR}`, `${VAR:default}`, `${VAR:?error}`; `$${` is a literal `${`.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unterminated variable reference in {s:?}"))?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(':') {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (std::env::var(name).ok(), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) if d.starts_with('?') => {
                    return Err(format!("{}: {}", name, &d[1..]));
                }
                (None, Some(d)) => out.push_str(d),
                (None, None) => {}
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks the values serde cannot: ranges, regexes, cross-key rules.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let a = &cfg.apm_server;
    if a.max_event_size == 0 {
        return Err(invalid("apm-server.max_event_size", "must be > 0"));
    }
    if a.host.trim().is_empty() {
        return Err(invalid("apm-server.host", "must not be empty"));
    }
    if a.data_streams.namespace.is_empty() {
        return Err(invalid(
            "apm-server.data_streams.namespace",
            "must not be empty",
        ));
    }
    let rl = &a.auth.anonymous.rate_limit;
    if rl.ip_limit <= 0 {
        return Err(invalid(
            "apm-server.auth.anonymous.rate_limit.ip_limit",
            "must be > 0",
        ));
    }
    if rl.event_limit < 0 {
        return Err(invalid(
            "apm-server.auth.anonymous.rate_limit.event_limit",
            "must be >= 0",
        ));
    }
    for (key, pat) in [
        ("apm-server.rum.library_pattern", &a.rum.library_pattern),
        (
            "apm-server.rum.exclude_from_grouping",
            &a.rum.exclude_from_grouping,
        ),
    ] {
        regex::Regex::new(pat).map_err(|e| invalid(key, e.to_string()))?;
    }
    if a.rum.source_mapping.max_sourcemap_size.get() == 0 {
        return Err(invalid(
            "apm-server.rum.source_mapping.max_sourcemap_size",
            "error parsing sourcemap max size: must be > 0",
        ));
    }
    if a.rum.source_mapping.timeout.get().is_zero() {
        return Err(invalid(
            "apm-server.rum.source_mapping.timeout",
            "must be > 0",
        ));
    }
    let exp = a.agent.config.cache.expiration.get();
    if exp.subsec_nanos() != 0 || exp.as_secs() < 1 {
        return Err(invalid(
            "apm-server.agent.config.cache.expiration",
            "only accepting full seconds",
        ));
    }
    for cidr in &a.auth.anonymous.trusted_proxies {
        parse_cidr(cidr).map_err(|e| invalid("apm-server.auth.anonymous.trusted_proxies", e))?;
    }
    if let Some(ssl) = &a.ssl {
        if ssl.enabled != Some(false) {
            if ssl.certificate.is_empty() {
                return Err(invalid(
                    "apm-server.ssl.certificate",
                    "required when TLS is enabled",
                ));
            }
            if ssl.key.is_empty() {
                return Err(invalid(
                    "apm-server.ssl.key",
                    "required when TLS is enabled",
                ));
            }
            if let Some(ca) = &ssl.client_authentication {
                if !matches!(ca.as_str(), "none" | "optional" | "required") {
                    return Err(invalid(
                        "apm-server.ssl.client_authentication",
                        format!("{ca:?} is not one of none, optional, required"),
                    ));
                }
            }
        }
    }
    let p = &cfg.pipeline;
    if p.memory_budget.get() < 1024 * 1024 {
        return Err(invalid("pipeline.memory_budget", "must be at least 1MiB"));
    }
    if p.queue_wait.get().is_zero() {
        return Err(invalid("pipeline.queue_wait", "must be > 0"));
    }
    for (name, st) in [
        ("decoder", &p.decoder),
        ("validator", &p.validator),
        ("rate", &p.rate),
        ("sourcemap", &p.sourcemap),
        (
            "aggregator",
            &Stage::new(p.aggregator.instances, p.aggregator.capacity),
        ),
        ("indexer", &p.indexer),
    ] {
        if st.instances == 0 || st.instances > 256 {
            return Err(invalid(
                &format!("pipeline.{name}.instances"),
                "must be 1..=256",
            ));
        }
        if st.capacity == 0 || st.capacity > 1_000_000 {
            return Err(invalid(
                &format!("pipeline.{name}.capacity"),
                "must be 1..=1000000",
            ));
        }
    }
    if p.aggregator.shards == 0 || p.aggregator.shards > 256 {
        return Err(invalid("pipeline.aggregator.shards", "must be 1..=256"));
    }
    let ag = &cfg.apm_server.aggregation;
    for (key, n) in [
        ("apm-server.aggregation.max_services", ag.max_services),
        (
            "apm-server.aggregation.transactions.max_groups",
            ag.transactions.max_groups,
        ),
        (
            "apm-server.aggregation.service_transactions.max_groups",
            ag.service_transactions.max_groups,
        ),
        (
            "apm-server.aggregation.service_destinations.max_groups",
            ag.service_destinations.max_groups,
        ),
    ] {
        if n == 0 {
            return Err(invalid(key, "must be > 0"));
        }
    }
    if !matches!(cfg.logging.format.as_str(), "text" | "json") {
        return Err(invalid("logging.format", "must be text or json"));
    }
    let es_on = cfg.elasticsearch_output_enabled();
    let on = cfg.enabled_outputs();
    if on.len() > 1 {
        return Err(invalid(
            &format!("output.{}", on[1]),
            format!(
                "only one output can be enabled, but output.{} and output.{} both are; disable one",
                on[0], on[1]
            ),
        ));
    }
    if let Some(es) = &cfg.output.elasticsearch {
        if es.compression_level > 9 {
            return Err(invalid(
                "output.elasticsearch.compression_level",
                "must be 0..=9",
            ));
        }
        if es.max_requests == 0 {
            return Err(invalid("output.elasticsearch.max_requests", "must be > 0"));
        }
        if es.client.hosts.is_empty() && es_on {
            return Err(invalid("output.elasticsearch.hosts", "must not be empty"));
        }
    }
    Ok(())
}

/// Parses `a.b.c.d/n` or a bare address (as /32 or /128).
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return Ok(n);
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR or IP address"))
}

impl Config {
    /// True when documents go to Elasticsearch rather than the file sink.
    pub fn elasticsearch_output_enabled(&self) -> bool {
        matches!(&self.output.elasticsearch, Some(es) if es.enabled != Some(false))
    }

    /// The outputs switched on, by section name (`elasticsearch`, `kafka`,
    /// `redis`, `console`, `file`); the file sink counts only when asked for
    /// explicitly, since it is the default when nothing else is on.
    pub fn enabled_outputs(&self) -> Vec<&'static str> {
        let o = &self.output;
        let on = |present: bool, enabled: Option<bool>| present && enabled != Some(false);
        [
            ("elasticsearch", self.elasticsearch_output_enabled()),
            (
                "kafka",
                on(o.kafka.is_some(), o.kafka.as_ref().and_then(|k| k.enabled)),
            ),
            (
                "redis",
                on(o.redis.is_some(), o.redis.as_ref().and_then(|r| r.enabled)),
            ),
            (
                "console",
                on(
                    o.console.is_some(),
                    o.console.as_ref().and_then(|c| c.enabled),
                ),
            ),
            ("file", o.file.enabled == Some(true)),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }

    /// `apm-server.host` with `:8200` appended when it has no port.
    pub fn listen_addr(&self) -> String {
        with_default_port(&self.apm_server.host, 8200)
    }

    /// `apm-server.otlp.grpc.host` with `:4317` appended when it has no
    /// port; None when the OTLP/gRPC listener is off (empty).
    pub fn grpc_listen_addr(&self) -> Option<String> {
        let h = self.apm_server.otlp.grpc.host.trim();
        (!h.is_empty()).then(|| with_default_port(h, 4317))
    }

    /// Whether auth is configured at all (secret token or API keys).
    pub fn auth_configured(&self) -> bool {
        let a = &self.apm_server.auth;
        !a.secret_token.is_empty() || a.api_key.enabled
    }

    /// Anonymous access: only when auth is configured; then as set, or, left
    /// unset, exactly when RUM is enabled (browsers cannot hold a secret).
    pub fn anonymous_enabled(&self) -> bool {
        let a = &self.apm_server.auth;
        self.auth_configured() && a.anonymous.enabled.unwrap_or(self.apm_server.rum.enabled)
    }

    /// TLS on: the section exists and `enabled` is not false.
    pub fn tls(&self) -> Option<&ServerTls> {
        self.apm_server
            .ssl
            .as_ref()
            .filter(|s| s.enabled != Some(false))
    }

    /// The effective configuration as YAML, secrets redacted (`apm-rs config`):
    /// [`Secret`]s, user info in every URL, and the values of credential
    /// headers in every `*headers` map.
    pub fn to_redacted_yaml(&self) -> String {
        let mut v = match serde_yaml_ng::to_value(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render: {e}\n"),
        };
        redact_value(&mut v);
        serde_yaml_ng::to_string(&v).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The placeholder printed instead of a credential.
pub const REDACTED: &str = "[redacted]";

/// `url` with its user info (`user:password@`) replaced by [`REDACTED`];
/// also for a host without a scheme (`user:pw@host:9200`). For every URL
/// the server prints or logs.
pub fn redact_url(url: &str) -> std::borrow::Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// Whether a header's value is a credential: `Authorization` and any name
/// that suggests one (token, key, secret, password, cookie, session, auth).
pub fn is_sensitive_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "passw",
        "cookie",
        "session",
        "credential",
    ]
    .iter()
    .any(|w| n.contains(w))
}

fn redact_value(v: &mut serde_yaml_ng::Value) {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redact_url(s) {
                *s = r;
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(redact_value),
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = k.as_str().unwrap_or_default();
                match val {
                    Value::Mapping(headers) if key.ends_with("headers") => {
                        for (name, hv) in headers.iter_mut() {
                            if is_sensitive_header(name.as_str().unwrap_or_default()) {
                                *hv = Value::String(REDACTED.into());
                            } else {
                                redact_value(hv);
                            }
                        }
                    }
                    _ => redact_value(val),
                }
            }
        }
        Value::Tagged(t) => redact_value(&mut t.value),
        _ => {}
    }
}

/// `host` without an `http(s)://` prefix, with `:port` appended when it has none.
fn with_default_port(host: &str, port: u16) -> String {
    let h = host.trim();
    let h = h
        .strip_prefix("http://")
        .or_else(|| h.strip_prefix("https://"))
        .unwrap_or(h);
    let has_port = if let Some(rest) = h.strip_prefix('[') {
        rest.contains("]:")
    } else {
        h.matches(':').count() == 1
    };
    if has_port {
        h.to_string()
    } else if h.contains(':') {
        format!("[{h}]:{port}")
    } else {
        format!("{h}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ov: &[&str]) -> Result<Config, ConfigError> {
        from_overrides(ov.iter().map(|s| s.to_string()))
    }

    #[test]
    fn urls_lose_their_user_info_and_credential_headers_their_values() {
        assert_eq!(
            redact_url("https://elastic:pw@es:9200/x?y=1"),
            "https://[redacted]@es:9200/x?y=1"
        );
        assert_eq!(redact_url("elastic:pw@es:9200"), "[redacted]@es:9200");
        assert_eq!(redact_url("http://es:9200/a@b"), "http://es:9200/a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        for h in ["Authorization", "X-Api-Key", "x-auth-token", "Cookie"] {
            assert!(is_sensitive_header(h), "{h}");
        }
        assert!(!is_sensitive_header("X-Forwarded-Proto"));
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen_addr(), "127.0.0.1:8200");
        assert_eq!(c.apm_server.max_event_size, 307_200);
        assert_eq!(c.apm_server.max_decompression_ratio, 200);
        assert_eq!(
            cfg(&["apm-server.max_decompression_ratio=0"])
                .unwrap()
                .apm_server
                .max_decompression_ratio,
            0
        );
        assert!(!c.anonymous_enabled());
        assert_eq!(
            c.apm_server.auth.anonymous.allow_agent,
            ["rum-js", "js-base"]
        );
        assert_eq!(c.apm_server.auth.anonymous.rate_limit.event_limit, 300);
        assert_eq!(c.apm_server.auth.anonymous.rate_limit.ip_limit, 1000);
        assert!(!c.apm_server.auth.api_key.enabled);
        assert_eq!(c.apm_server.auth.api_key.limit, 100);
        assert!(!c.elasticsearch_output_enabled());
        assert_eq!(
            c.apm_server.rum.source_mapping.max_sourcemap_size.get(),
            524_288_000
        );
    }

    #[test]
    fn the_grpc_listener_is_off_by_default_and_takes_port_4317_when_none_is_given() {
        assert_eq!(cfg(&[]).unwrap().grpc_listen_addr(), None);
        let on = |h: &str| {
            cfg(&[&format!("apm-server.otlp.grpc.host={h}")])
                .unwrap()
                .grpc_listen_addr()
        };
        assert_eq!(on("0.0.0.0").as_deref(), Some("0.0.0.0:4317"));
        assert_eq!(on("::1").as_deref(), Some("[::1]:4317"));
        assert_eq!(on("127.0.0.1:0").as_deref(), Some("127.0.0.1:0"));
    }

    #[test]
    fn overrides_and_dotted_keys() {
        let c = cfg(&[
            "apm-server.host=0.0.0.0",
            "apm-server.rum.allow_origins=[\"https://a.example\"]",
            "apm-server={max_event_size: 1000}",
            "apm-server.response_headers={X-Custom: [a, b]}",
        ])
        .unwrap();
        assert_eq!(c.listen_addr(), "0.0.0.0:8200");
        assert_eq!(c.apm_server.rum.allow_origins, ["https://a.example"]);
        assert_eq!(c.apm_server.max_event_size, 1000);
        // object override merged, not replaced
        assert_eq!(c.apm_server.host, "0.0.0.0");
        assert!(c.apm_server.response_headers.contains_key("X-Custom"));
    }

    #[test]
    fn unknown_key_names_the_key() {
        let e = cfg(&["apm-server.rum.enabeld=true"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("apm-server.rum.enabeld"), "{e}");
        let e = cfg(&["nonsense=1"]).unwrap_err().to_string();
        assert!(e.contains("nonsense"), "{e}");
    }

    #[test]
    fn every_elasticsearch_section_reads_the_client_keys_and_rejects_unknown_ones() {
        for section in [
            "output.elasticsearch",
            "apm-server.auth.api_key.elasticsearch",
            "apm-server.rum.source_mapping.elasticsearch",
            "apm-server.agent.config.elasticsearch",
        ] {
            let c = cfg(&[
                &format!("{section}.hosts=[\"es.example:9201\"]"),
                &format!("{section}.max_retries=7"),
                &format!("{section}.backoff.init=2s"),
            ])
            .unwrap_or_else(|e| panic!("{section}: {e}"));
            let client = match section {
                "output.elasticsearch" => c.output.elasticsearch.map(|o| o.client),
                "apm-server.auth.api_key.elasticsearch" => c.apm_server.auth.api_key.elasticsearch,
                "apm-server.rum.source_mapping.elasticsearch" => {
                    c.apm_server.rum.source_mapping.elasticsearch
                }
                _ => c.apm_server.agent.config.elasticsearch,
            }
            .unwrap_or_else(|| panic!("{section} missing"));
            assert_eq!(client.hosts, ["es.example:9201"], "{section}");
            assert_eq!(client.max_retries, 7, "{section}");
            assert_eq!(client.backoff.init.get(), std::time::Duration::from_secs(2));
            assert_eq!(client.timeout.get(), std::time::Duration::from_secs(5));

            let e = cfg(&[&format!("{section}.hostz=[\"x\"]")])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{section}.hostz")), "{section}: {e}");
        }
    }

    #[test]
    fn invalid_value_names_the_key() {
        let e = cfg(&["apm-server.max_event_size=lots"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("apm-server.max_event_size"), "{e}");
        let e = cfg(&["apm-server.agent.config.cache.expiration=1500ms"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only accepting full seconds"), "{e}");
        for bad in ["invalid_size", "0", "-10", "\"\""] {
            let e = cfg(&[&format!(
                "apm-server.rum.source_mapping.max_sourcemap_size={bad}"
            )]);
            assert!(e.is_err(), "{bad}");
        }
        assert!(cfg(&["apm-server.auth.anonymous.rate_limit.ip_limit=0"]).is_err());
    }

    #[test]
    fn anonymous_implicit_rules() {
        // J.84, J.85, J.86
        let c = cfg(&[
            "apm-server.auth.secret_token=abc",
            "apm-server.rum.enabled=true",
            "apm-server.auth.anonymous.allow_service=[service-one]",
        ])
        .unwrap();
        assert!(c.anonymous_enabled());
        let c = cfg(&[
            "apm-server.auth.secret_token=abc",
            "apm-server.rum.enabled=true",
            "apm-server.auth.anonymous.enabled=false",
        ])
        .unwrap();
        assert!(!c.anonymous_enabled());
        let c = cfg(&["apm-server.auth.anonymous.allow_service=[x]"]).unwrap();
        assert!(!c.anonymous_enabled());
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("APM_RS_TEST_TOKEN", "s3cret");
        assert_eq!(expand_env("${APM_RS_TEST_TOKEN}").unwrap(), "s3cret");
        assert_eq!(expand_env("${APM_RS_UNSET_X:dflt}").unwrap(), "dflt");
        assert_eq!(expand_env("a$${b}").unwrap(), "a${b}");
        assert!(expand_env("${APM_RS_UNSET_X:?need it}").is_err());
        let c = cfg(&["apm-server.auth.secret_token=${APM_RS_TEST_TOKEN}"]).unwrap();
        assert_eq!(c.apm_server.auth.secret_token.expose(), "s3cret");
        assert!(!c.to_redacted_yaml().contains("s3cret"));
    }

    #[test]
    fn env_key_mapping() {
        assert_eq!(
            env_key("APM_RS__APM_SERVER__MAX_EVENT_SIZE"),
            "apm-server.max_event_size"
        );
        assert_eq!(
            env_key("APM_RS__OUTPUT__ELASTICSEARCH__HOSTS"),
            "output.elasticsearch.hosts"
        );
    }

    #[test]
    fn profiles_parse() {
        for (name, _) in PROFILES {
            let c = load(&LoadOptions {
                pipeline: Some(name.to_string()),
                ..Default::default()
            });
            assert!(c.is_ok(), "{name}: {:?}", c.err());
        }
    }

    #[test]
    fn stage_instances_take_a_number_or_auto_which_follows_the_cores() {
        let auto = types::auto_instances();
        let instances = |ov: &[&str]| cfg(ov).map(|c| c.pipeline);
        assert_eq!(instances(&[]).unwrap().indexer.instances, auto);
        let c = load(&LoadOptions {
            pipeline: Some("default".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.pipeline.indexer.instances, auto);
        assert_eq!(
            instances(&["pipeline.indexer.instances=3"])
                .unwrap()
                .indexer
                .instances,
            3
        );
        assert_eq!(
            instances(&["pipeline.decoder.instances=auto"])
                .unwrap()
                .decoder
                .instances,
            auto
        );
        assert!(instances(&["pipeline.indexer.instances=many"]).is_err());
        assert!(instances(&["pipeline.indexer.instances=0"]).is_err());
        assert!(instances(&["pipeline.indexer.instances=-1"]).is_err());
        for (cores, n) in [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 2),
            (6, 2),
            (7, 3),
            (64, 16),
        ] {
            assert_eq!(types::auto_instances_for(cores), n, "{cores} cores");
        }
    }

    #[test]
    fn elasticsearch_section_switches_output() {
        let c = cfg(&["output.elasticsearch.hosts=[\"es:9200\"]"]).unwrap();
        assert!(c.elasticsearch_output_enabled());
        assert!(cfg(&[
            "output.elasticsearch.hosts=[\"es:9200\"]",
            "output.file.enabled=true"
        ])
        .is_err());
    }
}
