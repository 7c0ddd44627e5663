//! A client settings section resolved once at start-up: host URLs, the
//! headers of every request (credentials included), TLS, proxy, timeout and
//! the host-skip backoff.
//!
//! Host rule (every section): a host without a scheme gets `protocol`
//! (`http` when empty); a host without a port gets the default port (9200
//! for Elasticsearch, none for Kibana); a host without a path gets `path`
//! as prefix; query, fragment and user info are dropped; no trailing `/`.
//! Credentials: `api_key` (`id:key`, sent base64-encoded as `ApiKey`) wins
//! over `username`/`password` (Basic). Configured headers replace the
//! defaults; several values of one header are all sent.

use super::Error;
use crate::config::{ClientTls, EsClient, Kibana};
use base64::Engine;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;
use url::Url;

/// Whose credentials the requests carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The section's `api_key` / `username` + `password`.
    FromSettings,
    /// None from the settings, and a configured `Authorization` header is
    /// dropped: every request carries the caller's own (API-key checks).
    PerRequest,
}

/// A resolved settings section.
#[derive(Clone)]
pub struct Settings {
    /// The section name, for errors and warnings.
    pub section: String,
    /// Base URLs (`scheme://host:port[/path]`, no trailing `/`).
    pub hosts: Vec<Url>,
    /// Sent with every request (the auth header is marked sensitive).
    pub headers: HeaderMap,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Skip of a failed host: first, doubling up to the maximum.
    pub backoff_init: Duration,
    pub backoff_max: Duration,
    pub tls: Option<ClientTls>,
    pub proxy_url: String,
    pub proxy_disable: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("section", &self.section)
            .field("hosts", &self.hosts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Resolves one configured host (see the module doc for the rule).
pub fn resolve_host(
    raw: &str,
    protocol: &str,
    path: &str,
    default_port: Option<u16>,
) -> Result<Url, String> {
    let raw_t = raw.trim();
    if raw_t.is_empty() {
        return Err("empty".into());
    }
    let with_scheme = if raw_t.contains("://") {
        raw_t.to_string()
    } else {
        let proto = if protocol.is_empty() {
            "http"
        } else {
            protocol
        };
        format!("{proto}://{raw_t}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported scheme {:?}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if let (None, Some(port)) = (url.port(), default_port) {
        url.set_port(Some(port))
            .map_err(|()| "cannot set port".to_string())?;
    }
    if url.path().trim_matches('/').is_empty() {
        let p = path.trim().trim_matches('/');
        url.set_path(&if p.is_empty() {
            String::new()
        } else {
            format!("/{p}")
        });
    }
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(url)
}

fn sensitive(section: &str, v: String) -> Result<HeaderValue, Error> {
    let mut h = HeaderValue::from_str(&v).map_err(|_| Error::Header {
        section: section.to_string(),
        name: "Authorization".into(),
    })?;
    h.set_sensitive(true);
    Ok(h)
}

/// The default headers, the credentials and the configured headers.
fn headers(
    section: &str,
    api_key: &str,
    username: &str,
    password: &str,
    configured: &crate::config::HeaderMap,
    credentials: Credentials,
) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-elastic-product-origin"),
        HeaderValue::from_static("observability"),
    );
    headers.insert(
        reqwest::header::USER_AGENT,
        HeaderValue::from_static(super::USER_AGENT),
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    if credentials == Credentials::FromSettings {
        if !api_key.is_empty() {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                sensitive(section, format!("ApiKey {}", b64.encode(api_key)))?,
            );
        } else if !username.is_empty() {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                sensitive(
                    section,
                    format!("Basic {}", b64.encode(format!("{username}:{password}"))),
                )?,
            );
        }
    }
    let bad = |name: &str| Error::Header {
        section: section.to_string(),
        name: name.to_string(),
    };
    let mut first = std::collections::HashSet::new();
    for (name, values) in configured {
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(name))?;
        if credentials == Credentials::PerRequest && n == reqwest::header::AUTHORIZATION {
            continue;
        }
        for v in values.values() {
            let mut hv = HeaderValue::from_str(v).map_err(|_| bad(name))?;
            if n == reqwest::header::AUTHORIZATION {
                hv.set_sensitive(true);
            }
            if first.insert(n.clone()) {
                headers.insert(n.clone(), hv);
            } else {
                headers.append(n.clone(), hv);
            }
        }
    }
    Ok(headers)
}

impl Settings {
    /// An Elasticsearch section (`section` names it in errors).
    pub fn elasticsearch(
        section: &str,
        c: &EsClient,
        credentials: Credentials,
    ) -> Result<Self, Error> {
        if c.hosts.is_empty() {
            return Err(Error::NoHosts {
                section: section.to_string(),
            });
        }
        let hosts = c
            .hosts
            .iter()
            .map(|h| {
                resolve_host(h, &c.protocol, &c.path, Some(9200)).map_err(|reason| Error::Host {
                    section: section.to_string(),
                    host: h.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let backoff_init = c.backoff.init.get().max(Duration::from_millis(1));
        Ok(Settings {
            section: section.to_string(),
            hosts,
            headers: headers(
                section,
                c.api_key.expose(),
                &c.username,
                c.password.expose(),
                &c.headers,
                credentials,
            )?,
            timeout: c.timeout.get(),
            backoff_init,
            backoff_max: c.backoff.max.get().max(backoff_init),
            tls: c.ssl.clone().filter(|t| t.enabled != Some(false)),
            proxy_url: c.proxy_url.clone(),
            proxy_disable: c.proxy_disable,
        })
    }

    /// `apm-server.kibana`: one host, no default port, the `kbn-xsrf`
    /// header Kibana requires on POSTs, and `timeout`.
    pub fn kibana(k: &Kibana, timeout: Duration) -> Result<Self, Error> {
        let section = "apm-server.kibana";
        let host =
            resolve_host(&k.host, &k.protocol, &k.path, None).map_err(|reason| Error::Host {
                section: section.to_string(),
                host: k.host.clone(),
                reason,
            })?;
        let mut headers = headers(
            section,
            k.api_key.expose(),
            &k.username,
            k.password.expose(),
            &k.headers,
            Credentials::FromSettings,
        )?;
        headers.insert("kbn-xsrf", HeaderValue::from_static("1"));
        Ok(Settings {
            section: section.to_string(),
            hosts: vec![host],
            headers,
            timeout,
            backoff_init: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            tls: k.ssl.clone().filter(|t| t.enabled != Some(false)),
            proxy_url: String::new(),
            proxy_disable: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str, protocol: &str, path: &str) -> String {
        resolve_host(raw, protocol, path, Some(9200))
            .expect("valid host")
            .to_string()
    }

    #[test]
    fn a_bare_host_gets_the_protocol_and_port_9200() {
        assert_eq!(host("localhost", "http", ""), "http://localhost:9200/");
        assert_eq!(host("es", "https", ""), "https://es:9200/");
        assert_eq!(host("[::1]", "", ""), "http://[::1]:9200/");
    }

    #[test]
    fn the_host_path_wins_over_the_configured_path() {
        assert_eq!(
            host("http://es:9201/p/", "https", "/q/"),
            "http://es:9201/p"
        );
        assert_eq!(host("es:9201", "http", "q/"), "http://es:9201/q");
    }

    #[test]
    fn user_info_query_and_fragment_are_dropped() {
        assert_eq!(host("http://u:p@es:1/?a=b#f", "", ""), "http://es:1/");
    }

    #[test]
    fn bad_hosts_are_refused() {
        assert!(resolve_host("", "http", "", Some(9200)).is_err());
        assert!(resolve_host("ftp://es", "http", "", Some(9200)).is_err());
        assert!(resolve_host("http://", "http", "", Some(9200)).is_err());
    }

    #[test]
    fn kibana_hosts_get_no_default_port() {
        let u = resolve_host("kibana", "https", "/base", None).expect("valid");
        assert_eq!(u.as_str(), "https://kibana/base");
    }

    #[test]
    fn api_key_wins_over_basic_and_is_sensitive() {
        let c = EsClient {
            api_key: crate::config::Secret::new("id:key"),
            username: "u".into(),
            ..EsClient::default()
        };
        let s = Settings::elasticsearch("output.elasticsearch", &c, Credentials::FromSettings)
            .expect("settings");
        let auth = s.headers.get(reqwest::header::AUTHORIZATION).expect("auth");
        assert!(auth.is_sensitive());
        assert_eq!(auth.to_str().expect("ascii"), "ApiKey aWQ6a2V5");
    }

    #[test]
    fn per_request_credentials_drop_every_configured_authorization() {
        let mut c = EsClient {
            username: "u".into(),
            ..EsClient::default()
        };
        c.headers.insert(
            "Authorization".into(),
            crate::config::HeaderValues::One("Bearer x".into()),
        );
        let s = Settings::elasticsearch("s", &c, Credentials::PerRequest).expect("settings");
        assert!(s.headers.get(reqwest::header::AUTHORIZATION).is_none());
        assert_eq!(
            s.headers.get(reqwest::header::USER_AGENT).expect("ua"),
            super::super::USER_AGENT
        );
    }
}
