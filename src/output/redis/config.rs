//! Resolved Redis settings (`output.redis.*`), validated at start-up, and
//! the connection parameters the `redis` crate needs (rustls for `ssl`).

use crate::config::{ClientTls, RedisOutput};
use crate::output::message::{FormatError, FormatString};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("output.redis.hosts: {0:?} is not host:port")]
    Host(String),
    #[error("output.redis.hosts must not be empty")]
    NoHosts,
    #[error("output.redis.key: {0}")]
    Key(#[from] FormatError),
    #[error("output.redis.datatype: {0:?} is neither list nor channel")]
    Datatype(String),
    #[error("output.redis.ssl: {0}")]
    Tls(String),
}

/// How documents reach Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datatype {
    /// `RPUSH key message`.
    List,
    /// `PUBLISH key message`.
    Channel,
}

#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub hosts: Vec<(String, u16)>,
    pub key: FormatString,
    pub datatype: Datatype,
    pub db: i64,
    pub password: crate::config::Secret,
    pub tls: Option<Tls>,
    pub bulk_max_size: usize,
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff_init: Duration,
    pub backoff_max: Duration,
}

/// TLS parameters for `rediss://` connections.
#[derive(Clone, Debug)]
pub struct Tls {
    /// CA bundle (PEM) replacing the system roots, if any.
    pub root_pem: Option<Vec<u8>>,
    /// `verification_mode: none`: certificates and host names are not checked.
    pub insecure: bool,
}

impl RedisSettings {
    pub fn from_config(c: &RedisOutput) -> Result<Self, SettingsError> {
        if c.hosts.is_empty() {
            return Err(SettingsError::NoHosts);
        }
        let hosts = c
            .hosts
            .iter()
            .map(|h| parse_host(h, 6379))
            .collect::<Result<Vec<_>, _>>()?;
        let datatype = match c.datatype.as_str() {
            "list" => Datatype::List,
            "channel" => Datatype::Channel,
            other => return Err(SettingsError::Datatype(other.to_string())),
        };
        let key = FormatString::parse(&c.key)?;
        if key.is_empty() {
            return Err(SettingsError::Key(FormatError::Syntax(
                c.key.clone(),
                "the key must not be empty",
            )));
        }
        Ok(RedisSettings {
            hosts,
            key,
            datatype,
            db: i64::from(c.db),
            password: c.password.clone(),
            tls: c.ssl.as_ref().map(tls).transpose()?.flatten(),
            bulk_max_size: c.bulk_max_size.max(1),
            timeout: c.timeout.0.max(Duration::from_millis(1)),
            max_retries: c.max_retries,
            backoff_init: c.backoff.init.0,
            backoff_max: c.backoff.max.0,
        })
    }
}

/// `host:port`, `host` (default port) or `[v6]:port`, with an optional `redis://` prefix.
pub fn parse_host(h: &str, default_port: u16) -> Result<(String, u16), SettingsError> {
    let bad = || SettingsError::Host(h.to_string());
    let s = h.trim();
    let s = s
        .strip_prefix("redis://")
        .or_else(|| s.strip_prefix("rediss://"))
        .unwrap_or(s);
    if s.is_empty() {
        return Err(bad());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => default_port,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            Ok((host.to_string(), port.parse().map_err(|_| bad())?))
        }
        Some(_) => Err(bad()),
        None => Ok((s.to_string(), default_port)),
    }
}

fn tls(t: &ClientTls) -> Result<Option<Tls>, SettingsError> {
    if t.enabled == Some(false) {
        return Ok(None);
    }
    let insecure = match t.verification_mode.as_deref().unwrap_or("full") {
        "full" | "strict" => false,
        "none" => {
            tracing::warn!(
                "output.redis.ssl.verification_mode is none: server certificates are not verified"
            );
            true
        }
        other => {
            return Err(SettingsError::Tls(format!(
                "verification_mode {other:?} is not supported (full, strict, none)"
            )))
        }
    };
    if !t.certificate.is_empty() || !t.key.is_empty() {
        return Err(SettingsError::Tls(
            "client certificates are not supported by the Redis output".into(),
        ));
    }
    let root_pem = match t.certificate_authorities.as_slice() {
        [] => None,
        paths => {
            let mut pem = Vec::new();
            for p in paths {
                pem.extend(std::fs::read(p).map_err(|e| SettingsError::Tls(format!("{p}: {e}")))?);
                pem.push(b'\n');
            }
            Some(pem)
        }
    };
    Ok(Some(Tls { root_pem, insecure }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_take_the_default_port_and_v6_brackets() {
        assert_eq!(parse_host("r1", 6379).unwrap(), ("r1".into(), 6379));
        assert_eq!(parse_host("r1:7000", 6379).unwrap(), ("r1".into(), 7000));
        assert_eq!(
            parse_host("[::1]:7000", 6379).unwrap(),
            ("::1".into(), 7000)
        );
        assert!(parse_host("r1:x", 6379).is_err());
    }

    #[test]
    fn unknown_datatype_is_refused() {
        let c = RedisOutput {
            datatype: "set".into(),
            ..RedisOutput::default()
        };
        assert!(matches!(
            RedisSettings::from_config(&c),
            Err(SettingsError::Datatype(_))
        ));
    }
}
