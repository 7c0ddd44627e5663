//! API-key authentication: `Authorization: ApiKey
//! <base64(id:key)>`, verified with Elasticsearch's
//! `GET /_security/user/_has_privileges` and cached ([`super::cache`]).
//!
//! * Parsing follows Go's `base64.StdEncoding` byte for byte, so the error
//!   texts (with the offending input offset) match apm-server.
//! * The verification request carries the caller's credentials exactly as
//!   received and nothing of the server's own Elasticsearch credentials
//!   (username, password, api_key and any configured `Authorization` header
//!   are dropped; the client is built by [`crate::es`] with
//!   [`es::Credentials::PerRequest`], so TLS, client certificate, proxy and
//!   host failover are those of every other Elasticsearch caller). Retries
//!   only on network errors and HTTP 429, with
//!   exponential back-off, at most `max_retries` times.
//! * Outcomes: 2xx with some privilege → granted (cached); 2xx all false or
//!   401 → `authentication failed` (cached); anything else → backend error
//!   (503), never cached.
//! * Concurrent misses for the same key share one Elasticsearch call.
//!
//! Invariants: the secret and the `Authorization` header are never logged or
//! stored (only a SHA-256 of the secret, in the cache key); nothing
//! Elasticsearch sends can panic the server; the response body read is
//! bounded.

use super::cache::{Cache, CacheKey, Verified, TTL};
use super::{ApiKeyPrivileges, AuthError, MSG_FAILED};
use crate::config::{Config, EsClient};
use crate::es;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `_has_privileges` body, byte-exact as apm-server sends it: the `apm`
/// application's three privileges on resource `-`.
pub const HAS_PRIVILEGES_BODY: &str = r#"{"application":[{"application":"apm","privileges":["config_agent:read","event:write","sourcemap:write"],"resources":["-"]}]}"#;
/// Path of the verification call (after any configured path prefix).
pub const HAS_PRIVILEGES_PATH: &str = "/_security/user/_has_privileges";
/// Backend error text when the cache is full.
pub const MSG_LIMIT: &str = "api_key limit reached, check your logs for failed authorization attempts or consider increasing config option `apm-server.api_key.limit`";
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The API-key Elasticsearch client cannot be built from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Elasticsearch settings for API key verification: {0}")]
pub struct ApiKeyConfigError(pub String);

/// A verified API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: String,
    pub username: String,
    pub privileges: ApiKeyPrivileges,
}

/// Decodes standard base64 (with padding) exactly like Go's
/// `base64.StdEncoding.DecodeString`, including its error offsets
/// (`illegal base64 data at input byte N`) and its skipping of `\r`/`\n`.
pub fn go_base64_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let is_nl = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0usize;
    loop {
        let mut dbuf = [0u8; 4];
        let mut dlen = 4usize;
        let mut j = 0usize;
        let mut trailing_err: Option<usize> = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                // StdEncoding has padding: a short final quantum is corrupt.
                return Err(corrupt(si - j));
            }
            let c = src[si];
            si += 1;
            if let Some(v) = val(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if is_nl(c) {
                continue;
            }
            if c != b'=' {
                return Err(corrupt(si - 1));
            }
            // padding
            match j {
                0 | 1 => return Err(corrupt(si - 1)),
                2 => {
                    while si < src.len() && is_nl(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(corrupt(src.len()));
                    }
                    if src[si] != b'=' {
                        return Err(corrupt(si - 1));
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && is_nl(src[si]) {
                si += 1;
            }
            if si < src.len() {
                trailing_err = Some(si);
            }
            dlen = j;
            break;
        }
        let v = (u32::from(dbuf[0]) << 18)
            | (u32::from(dbuf[1]) << 12)
            | (u32::from(dbuf[2]) << 6)
            | u32::from(dbuf[3]);
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..dlen - 1]);
        if let Some(at) = trailing_err {
            return Err(corrupt(at));
        }
        if dlen < 4 {
            return Ok(out);
        }
    }
}

/// Splits `ApiKey` credentials into (id, secret): base64 of `id:secret`.
pub fn parse_credentials(credentials: &str) -> Result<(String, Vec<u8>), AuthError> {
    let decoded = go_base64_decode(credentials.as_bytes()).map_err(|e| {
        AuthError::Failed(format!(
            "authentication failed: improperly encoded ApiKey credentials: expected base64(ID:APIKey): {e}"
        ))
    })?;
    let colon = decoded.iter().position(|&b| b == b':').ok_or_else(|| {
        AuthError::Failed(
            "authentication failed: improperly formatted ApiKey credentials: expected base64(ID:APIKey)"
                .into(),
        )
    })?;
    let id = String::from_utf8_lossy(&decoded[..colon]).into_owned();
    Ok((id, decoded[colon + 1..].to_vec()))
}

/// The Elasticsearch settings used for verification: the explicit
/// `apm-server.auth.api_key.elasticsearch` section, else
/// `output.elasticsearch`, else the defaults (`localhost:9200`); credentials
/// always blanked.
pub fn es_settings(cfg: &Config) -> EsClient {
    let mut es = match (
        &cfg.apm_server.auth.api_key.elasticsearch,
        &cfg.output.elasticsearch,
    ) {
        (Some(explicit), _) => explicit.clone(),
        (None, Some(out)) => out.client.clone(),
        (None, None) => EsClient::default(),
    };
    es.username.clear();
    es.password = Default::default();
    es.api_key = Default::default();
    es
}

/// What Elasticsearch answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EsAnswer {
    Privileges {
        username: String,
        privileges: ApiKeyPrivileges,
    },
    Unauthorized,
}

/// The HTTP client for `_has_privileges`.
struct PrivilegesClient {
    client: es::Client,
    max_retries: u32,
    backoff_init: Duration,
    backoff_max: Duration,
}

impl PrivilegesClient {
    fn new(es: &EsClient) -> Result<Self, String> {
        let settings = es::Settings::elasticsearch(
            "apm-server.auth.api_key.elasticsearch",
            es,
            es::Credentials::PerRequest,
        )
        .map_err(|e| e.to_string())?;
        let client = es::Client::new(&settings).map_err(|e| e.to_string())?;
        Ok(Self::with_client(client, es))
    }

    /// Uses `client` (its own credentials are dropped) with the retry
    /// settings of `es`.
    fn with_client(client: es::Client, es: &EsClient) -> Self {
        PrivilegesClient {
            client: client.without_credentials(),
            max_retries: es.max_retries,
            backoff_init: es.backoff.init.get(),
            backoff_max: es.backoff.max.get(),
        }
    }

    /// The `_has_privileges` URL of host `i`.
    fn url(&self, i: usize) -> Option<url::Url> {
        self.client.hosts().url(i, HAS_PRIVILEGES_PATH)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.backoff_init
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    async fn has_privileges(&self, credentials: &str) -> Result<EsAnswer, String> {
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("ApiKey {credentials}"))
            .map_err(|_| "credentials are not a valid header value".to_string())?;
        auth.set_sensitive(true);
        let mut attempt = 0u32;
        loop {
            let hosts = self.client.hosts();
            let i = hosts.pick();
            let url = self.url(i).ok_or_else(|| "no hosts".to_string())?;
            let sent = self
                .client
                .request(reqwest::Method::GET, url)
                .header(reqwest::header::AUTHORIZATION, auth.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(HAS_PRIVILEGES_BODY)
                .send()
                .await;
            match &sent {
                Err(_) => {
                    hosts.mark_failed(i);
                }
                Ok(_) => hosts.mark_ok(i),
            }
            let retryable = match &sent {
                Err(_) => true,
                Ok(r) => r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS,
            };
            if retryable && attempt < self.max_retries {
                tokio::time::sleep(self.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            let resp = sent.map_err(|e| format!("API key verification request failed: {e}"))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED {
                return Ok(EsAnswer::Unauthorized);
            }
            if !status.is_success() {
                return Err(format!(
                    "API key verification failed: Elasticsearch answered {status}"
                ));
            }
            let body = read_bounded(resp).await?;
            return parse_privileges(&body);
        }
    }
}

async fn read_bounded(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the API key verification response: {e}"))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err("API key verification response too large".into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_privileges(body: &[u8]) -> Result<EsAnswer, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("invalid API key verification response: {e}"))?;
    let username = v
        .get("username")
        .and_then(|u| u.as_str())
        .unwrap_or_default()
        .to_string();
    let privs = v
        .get("application")
        .and_then(|a| a.get("apm"))
        .and_then(|a| a.get("-"));
    let has = |p: &str| {
        privs
            .and_then(|m| m.get(p))
            .and_then(|b| b.as_bool())
            .unwrap_or(false)
    };
    Ok(EsAnswer::Privileges {
        username,
        privileges: ApiKeyPrivileges {
            config_agent_read: has("config_agent:read"),
            event_write: has("event:write"),
            sourcemap_write: has("sourcemap:write"),
        },
    })
}

/// A cache reservation, released if the verification does not complete
/// (error or cancellation).
struct Reservation<'a> {
    cache: &'a parking_lot::Mutex<Cache>,
    done: bool,
}

impl Reservation<'_> {
    fn complete(mut self, key: CacheKey, v: Verified) {
        self.cache.lock().complete(key, v, Instant::now());
        self.done = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cache.lock().release();
        }
    }
}

type Gate = Arc<tokio::sync::Mutex<()>>;

/// Removes a key's in-flight gate when its last user is done (also on cancellation).
struct InflightEntry<'a> {
    map: &'a parking_lot::Mutex<HashMap<CacheKey, Gate>>,
    key: CacheKey,
    gate: Gate,
}

impl<'a> InflightEntry<'a> {
    fn enter(map: &'a parking_lot::Mutex<HashMap<CacheKey, Gate>>, key: &CacheKey) -> Self {
        let gate = map.lock().entry(key.clone()).or_default().clone();
        InflightEntry {
            map,
            key: key.clone(),
            gate,
        }
    }
}

impl Drop for InflightEntry<'_> {
    fn drop(&mut self) {
        let mut m = self.map.lock();
        let last = m
            .get(&self.key)
            .is_some_and(|g| Arc::ptr_eq(g, &self.gate) && Arc::strong_count(&self.gate) <= 2);
        if last {
            m.remove(&self.key);
        }
    }
}

/// Verifies `ApiKey` credentials with Elasticsearch, through the cache.
pub struct ApiKeyVerifier {
    client: Result<PrivilegesClient, String>,
    cache: parking_lot::Mutex<Cache>,
    inflight: parking_lot::Mutex<HashMap<CacheKey, Gate>>,
}

impl ApiKeyVerifier {
    /// Fails when the Elasticsearch client cannot be built (bad host, CA file…).
    pub fn try_new(cfg: &Config) -> Result<Self, ApiKeyConfigError> {
        let client = PrivilegesClient::new(&es_settings(cfg)).map_err(ApiKeyConfigError)?;
        Ok(Self::with_client(
            Ok(client),
            cfg.apm_server.auth.api_key.limit,
            TTL,
        ))
    }

    /// Like [`Self::try_new`], but a client error only makes every
    /// verification a backend error (503), after logging it once.
    pub fn new(cfg: &Config) -> Self {
        match Self::try_new(cfg) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("{e}; API key requests will be answered 503");
                Self::with_client(Err(e.to_string()), cfg.apm_server.auth.api_key.limit, TTL)
            }
        }
    }

    fn with_client(client: Result<PrivilegesClient, String>, limit: i64, ttl: Duration) -> Self {
        ApiKeyVerifier {
            client,
            cache: parking_lot::Mutex::new(Cache::new(limit, ttl)),
            inflight: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    fn with_ttl(cfg: &Config, ttl: Duration) -> Self {
        let client = PrivilegesClient::new(&es_settings(cfg)).map_err(|e| e.to_string());
        Self::with_client(client, cfg.apm_server.auth.api_key.limit, ttl)
    }

    fn outcome(id: &str, v: Verified) -> Result<ApiKeyInfo, AuthError> {
        match v {
            Verified::Granted {
                privileges,
                username,
            } => Ok(ApiKeyInfo {
                id: id.to_string(),
                username,
                privileges,
            }),
            Verified::Denied => Err(AuthError::Failed(MSG_FAILED.into())),
        }
    }

    /// Authenticates the token of `Authorization: ApiKey <credentials>`.
    pub async fn authenticate(&self, credentials: &str) -> Result<ApiKeyInfo, AuthError> {
        let (id, secret) = parse_credentials(credentials)?;
        let key = CacheKey::new(&id, &secret);
        if let Some(v) = self.cache.lock().get(&key, Instant::now()) {
            return Self::outcome(&id, v);
        }
        let entry = InflightEntry::enter(&self.inflight, &key);
        let _turn = entry.gate.lock().await;
        // Another request for the same key may have verified it meanwhile.
        if let Some(v) = self.cache.lock().get(&key, Instant::now()) {
            return Self::outcome(&id, v);
        }
        if !self.cache.lock().reserve(Instant::now()) {
            tracing::warn!(api_key_id = ?id, "{MSG_LIMIT}");
            return Err(AuthError::Backend(MSG_LIMIT.into()));
        }
        let reservation = Reservation {
            cache: &self.cache,
            done: false,
        };
        let client = self
            .client
            .as_ref()
            .map_err(|e| AuthError::Backend(e.clone()))?;
        let answer = client.has_privileges(credentials).await.map_err(|e| {
            tracing::warn!(api_key_id = ?id, "{e}");
            AuthError::Backend(e)
        })?;
        let v = match answer {
            EsAnswer::Privileges {
                username,
                privileges,
            } if privileges.event_write
                || privileges.config_agent_read
                || privileges.sourcemap_write =>
            {
                Verified::Granted {
                    privileges,
                    username,
                }
            }
            _ => Verified::Denied,
        };
        if v == Verified::Denied {
            tracing::debug!(api_key_id = ?id, "API key denied by Elasticsearch");
        }
        reservation.complete(key, v.clone());
        Self::outcome(&id, v)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine;
    use std::net::SocketAddr;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// One request as the fake Elasticsearch saw it.
    #[derive(Debug, Clone)]
    pub struct Seen {
        pub method: String,
        pub path: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Seen {
        pub fn header(&self, name: &str) -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect()
        }
    }

    type Handler = Arc<dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync>;

    /// A tiny HTTP/1.1 server that records requests and answers via `handler`
    /// (given the request and the 0-based call number).
    pub struct FakeEs {
        pub addr: SocketAddr,
        pub seen: Arc<parking_lot::Mutex<Vec<Seen>>>,
    }

    impl FakeEs {
        pub async fn start(handler: Handler) -> FakeEs {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let seen2 = seen.clone();
            tokio::spawn(async move {
                while let Ok((sock, _)) = listener.accept().await {
                    let (seen, handler) = (seen2.clone(), handler.clone());
                    tokio::spawn(async move {
                        let (r, mut w) = sock.into_split();
                        let mut r = BufReader::new(r);
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let mut parts = line.split_whitespace();
                            let method = parts.next().unwrap_or("").to_string();
                            let path = parts.next().unwrap_or("").to_string();
                            let mut headers = Vec::new();
                            loop {
                                let mut h = String::new();
                                if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                let h = h.trim_end();
                                if h.is_empty() {
                                    break;
                                }
                                if let Some((k, v)) = h.split_once(':') {
                                    headers.push((k.trim().to_string(), v.trim().to_string()));
                                }
                            }
                            let len = headers
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                                .and_then(|(_, v)| v.parse::<usize>().ok())
                                .unwrap_or(0);
                            let mut body = vec![0; len];
                            if r.read_exact(&mut body).await.is_err() {
                                return;
                            }
                            let req = Seen {
                                method,
                                path,
                                headers,
                                body,
                            };
                            let n = {
                                let mut s = seen.lock();
                                s.push(req.clone());
                                s.len() - 1
                            };
                            let (status, body) = handler(&req, n);
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if w.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            FakeEs { addr, seen }
        }

        pub fn calls(&self) -> usize {
            self.seen.lock().len()
        }
    }

    pub const GRANTED: &str = r#"{"username":"api_key_username","application":{"apm":{"-":{"config_agent:read":true,"event:write":true,"sourcemap:write":false}}}}"#;
    pub const ALL_FALSE: &str = r#"{"username":"u","application":{"apm":{"-":{"config_agent:read":false,"event:write":false,"sourcemap:write":false}}}}"#;

    pub fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    pub fn es_config(addr: SocketAddr, extra: &[&str]) -> Config {
        let mut ov = vec![
            "apm-server.auth.api_key.enabled=true".to_string(),
            format!("apm-server.auth.api_key.elasticsearch.hosts=[\"http://{addr}\"]"),
            "apm-server.auth.api_key.elasticsearch.proxy_disable=true".to_string(),
            "apm-server.auth.api_key.elasticsearch.backoff.init=5ms".to_string(),
            "apm-server.auth.api_key.elasticsearch.backoff.max=20ms".to_string(),
        ];
        ov.extend(extra.iter().map(|s| s.to_string()));
        crate::config::from_overrides(ov).unwrap()
    }

    /// Grants ids starting with `id_value`, denies (401) the rest.
    fn by_id() -> Handler {
        Arc::new(|req: &Seen, _| {
            let auth = req
                .header("authorization")
                .first()
                .copied()
                .unwrap_or("")
                .to_string();
            let creds = auth.strip_prefix("ApiKey ").unwrap_or("");
            let decoded = go_base64_decode(creds.as_bytes()).unwrap_or_default();
            if decoded.starts_with(b"id_value") {
                (200, GRANTED.to_string())
            } else {
                (401, "{}".to_string())
            }
        })
    }

    #[test]
    fn go_base64_errors_g63() {
        assert_eq!(
            go_base64_decode(b"invalid_base64").unwrap_err(),
            "illegal base64 data at input byte 7"
        );
        assert_eq!(go_base64_decode(b"").unwrap(), b"");
        assert_eq!(go_base64_decode(b"aGk=").unwrap(), b"hi");
        assert_eq!(go_base64_decode(b"aA==").unwrap(), b"h");
        assert_eq!(go_base64_decode(b"aGVs\r\nbG8=").unwrap(), b"hello");
        // missing padding (Go: CorruptInputError at the start of the quantum)
        assert_eq!(
            go_base64_decode(b"aGk").unwrap_err(),
            "illegal base64 data at input byte 0"
        );
        assert_eq!(
            go_base64_decode(b"aGVsbG8").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(
            go_base64_decode(b"a").unwrap_err(),
            "illegal base64 data at input byte 0"
        );
        // padding in the wrong place
        assert_eq!(
            go_base64_decode(b"a===").unwrap_err(),
            "illegal base64 data at input byte 1"
        );
        assert_eq!(
            go_base64_decode(b"aA=").unwrap_err(),
            "illegal base64 data at input byte 3"
        );
        assert_eq!(
            go_base64_decode(b"aA=x").unwrap_err(),
            "illegal base64 data at input byte 2"
        );
        // trailing garbage after padding
        assert_eq!(
            go_base64_decode(b"aA==aGk=").unwrap_err(),
            "illegal base64 data at input byte 4"
        );
        assert_eq!(
            go_base64_decode(b"a b=").unwrap_err(),
            "illegal base64 data at input byte 1"
        );
        // round trip with the base64 crate
        for s in ["", "a", "ab", "abc", "id:key", "id_value:key_value"] {
            assert_eq!(go_base64_decode(b64(s).as_bytes()).unwrap(), s.as_bytes());
        }
    }

    #[test]
    fn credentials_g63_g64() {
        assert_eq!(
            parse_credentials("invalid_base64").unwrap_err(),
            AuthError::Failed(
                "authentication failed: improperly encoded ApiKey credentials: expected base64(ID:APIKey): illegal base64 data at input byte 7"
                    .into()
            )
        );
        assert_eq!(
            parse_credentials(&b64("malformatted_credentials")).unwrap_err(),
            AuthError::Failed(
                "authentication failed: improperly formatted ApiKey credentials: expected base64(ID:APIKey)"
                    .into()
            )
        );
        assert_eq!(
            parse_credentials(&b64("id:k:ey")).unwrap(),
            ("id".to_string(), b"k:ey".to_vec())
        );
        assert_eq!(
            parse_credentials(&b64(":k")).unwrap(),
            (String::new(), b"k".to_vec())
        );
    }

    #[test]
    fn verification_urls_keep_the_host_prefix_and_drop_user_info() {
        let u = |h: &str, p: &str, path: &str| {
            let es = EsClient {
                hosts: vec![h.to_string()],
                protocol: p.to_string(),
                path: path.to_string(),
                ..EsClient::default()
            };
            PrivilegesClient::new(&es).map(|c| c.url(0).map(|u| u.to_string()))
        };
        assert_eq!(
            u("localhost:9200", "http", "").unwrap().unwrap(),
            "http://localhost:9200/_security/user/_has_privileges"
        );
        assert_eq!(
            u("es", "https", "").unwrap().unwrap(),
            "https://es:9200/_security/user/_has_privileges"
        );
        assert_eq!(
            u("http://user:pw@es:1234/pre/", "", "").unwrap().unwrap(),
            "http://es:1234/pre/_security/user/_has_privileges"
        );
        assert_eq!(
            u("[::1]", "http", "/x/").unwrap().unwrap(),
            "http://[::1]:9200/x/_security/user/_has_privileges"
        );
        assert!(u("ftp://x", "", "").is_err());
    }

    #[test]
    fn settings_fall_back_without_credentials_g89() {
        let c = crate::config::from_overrides([
            "output.elasticsearch.hosts=[\"192.0.0.168:9200\"]",
            "output.elasticsearch.username=elastic",
            "output.elasticsearch.password=changeme",
            "output.elasticsearch.api_key=id:key",
        ])
        .unwrap();
        let es = es_settings(&c);
        assert_eq!(es.hosts, ["192.0.0.168:9200"]);
        assert!(es.username.is_empty() && es.password.is_empty() && es.api_key.is_empty());
        let c = crate::config::from_overrides(Vec::<String>::new()).unwrap();
        assert_eq!(es_settings(&c).hosts, ["localhost:9200"]);
        let c = crate::config::from_overrides([
            "output.elasticsearch.hosts=[\"out:9200\"]",
            "apm-server.auth.api_key.elasticsearch.hosts=[\"auth:9200\"]",
            "apm-server.auth.api_key.elasticsearch.username=u",
        ])
        .unwrap();
        let es = es_settings(&c);
        assert_eq!(es.hosts, ["auth:9200"]);
        assert!(es.username.is_empty());
    }

    #[tokio::test]
    async fn verification_request_g60() {
        let es = FakeEs::start(by_id()).await;
        let cfg = es_config(
            es.addr,
            &[
                "apm-server.auth.api_key.elasticsearch.username=elastic",
                "apm-server.auth.api_key.elasticsearch.password=changeme",
                "apm-server.auth.api_key.elasticsearch.api_key=server:secret",
                "apm-server.auth.api_key.elasticsearch.headers={X-Extra: yes, Authorization: Basic Zm9vOmJhcg==}",
            ],
        );
        let v = ApiKeyVerifier::try_new(&cfg).unwrap();
        let creds = b64("id_value:key_value");
        let info = v.authenticate(&creds).await.unwrap();
        assert_eq!(
            info,
            ApiKeyInfo {
                id: "id_value".into(),
                username: "api_key_username".into(),
                privileges: ApiKeyPrivileges {
                    config_agent_read: true,
                    event_write: true,
                    sourcemap_write: false
                },
            }
        );
        let seen = es.seen.lock()[0].clone();
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.path, HAS_PRIVILEGES_PATH);
        assert_eq!(seen.body, HAS_PRIVILEGES_BODY.as_bytes());
        assert_eq!(
            seen.header("authorization"),
            vec![format!("ApiKey {creds}")]
        );
        assert_eq!(seen.header("content-type"), vec!["application/json"]);
        assert_eq!(
            seen.header("x-elastic-product-origin"),
            vec!["observability"]
        );
        assert_eq!(seen.header("x-extra"), vec!["yes"]);
        assert!(seen.header("user-agent")[0].starts_with("Elastic-APM-Server/"));
    }

    #[tokio::test]
    async fn outcomes_g65_g66() {
        // 401 → authentication failed, cached
        let es = FakeEs::start(Arc::new(|_: &Seen, _| (401, "{}".into()))).await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
        for _ in 0..3 {
            assert_eq!(
                v.authenticate(&b64("a:b")).await.unwrap_err(),
                AuthError::Failed(MSG_FAILED.into())
            );
        }
        assert_eq!(es.calls(), 1);
        // all false → authentication failed, cached
        let es = FakeEs::start(Arc::new(|_: &Seen, _| (200, ALL_FALSE.into()))).await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
        for _ in 0..2 {
            assert_eq!(
                v.authenticate(&b64("a:b")).await.unwrap_err(),
                AuthError::Failed(MSG_FAILED.into())
            );
        }
        assert_eq!(es.calls(), 1);
        // 403 / 500 / garbage → backend error, not cached
        for (status, body) in [(403, "{}"), (500, "{}"), (200, "not json")] {
            let es = FakeEs::start(Arc::new(move |_: &Seen, _| (status, body.into()))).await;
            let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
            for _ in 0..2 {
                assert!(matches!(
                    v.authenticate(&b64("a:b")).await,
                    Err(AuthError::Backend(_))
                ));
            }
            assert_eq!(es.calls(), 2, "status {status}");
        }
        // unreachable → backend error after bounded retries
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let v = ApiKeyVerifier::try_new(&es_config(dead, &[])).unwrap();
        let e = v.authenticate(&b64("a:b")).await.unwrap_err();
        assert!(matches!(e, AuthError::Backend(_)), "{e:?}");
    }

    #[tokio::test]
    async fn retries_only_on_429() {
        let es = FakeEs::start(Arc::new(|_: &Seen, n| {
            if n < 2 {
                (429, "{}".into())
            } else {
                (200, GRANTED.into())
            }
        }))
        .await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
        assert!(v.authenticate(&b64("id_value:x")).await.is_ok());
        assert_eq!(es.calls(), 3);
        // always 429: max_retries (3) + 1 attempts, then backend error
        let es = FakeEs::start(Arc::new(|_: &Seen, _| (429, "{}".into()))).await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
        assert!(matches!(
            v.authenticate(&b64("id_value:x")).await,
            Err(AuthError::Backend(_))
        ));
        assert_eq!(es.calls(), 4);
        // 503 is not retried
        let es = FakeEs::start(Arc::new(|_: &Seen, _| (503, "{}".into()))).await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
        assert!(v.authenticate(&b64("id_value:x")).await.is_err());
        assert_eq!(es.calls(), 1);
    }

    #[tokio::test]
    async fn cache_and_limit_g67_adapted() {
        let es = FakeEs::start(by_id()).await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &["apm-server.auth.api_key.limit=2"]))
            .unwrap();
        // valid key 3× → one call
        for _ in 0..3 {
            assert!(v.authenticate(&b64("id_value:key_value")).await.is_ok());
        }
        assert_eq!(es.calls(), 1);
        // unknown id answered 401, 3× → one call, failure each time
        for _ in 0..3 {
            assert_eq!(
                v.authenticate(&b64("unknown:x")).await.unwrap_err(),
                AuthError::Failed(MSG_FAILED.into())
            );
        }
        assert_eq!(es.calls(), 2);
        // deviation: the same id with another secret is a miss, not accepted;
        // the cache is full (2 live entries), so it is refused with 503
        assert_eq!(
            v.authenticate(&b64("id_value:other_secret"))
                .await
                .unwrap_err(),
            AuthError::Backend(MSG_LIMIT.into())
        );
        // a third distinct id → limit reached
        assert_eq!(
            v.authenticate(&b64("third:x")).await.unwrap_err(),
            AuthError::Backend(MSG_LIMIT.into())
        );
        assert_eq!(es.calls(), 2);
        // cached keys still work
        assert!(v.authenticate(&b64("id_value:key_value")).await.is_ok());
    }

    #[tokio::test]
    async fn different_secret_is_verified_again() {
        // ES accepts only one secret for id_value.
        let es = FakeEs::start(Arc::new(|req: &Seen, _| {
            let ok =
                req.header("authorization") == vec![format!("ApiKey {}", b64("id_value:right"))];
            if ok {
                (200, GRANTED.into())
            } else {
                (401, "{}".into())
            }
        }))
        .await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap();
        assert!(v.authenticate(&b64("id_value:right")).await.is_ok());
        assert_eq!(
            v.authenticate(&b64("id_value:wrong")).await.unwrap_err(),
            AuthError::Failed(MSG_FAILED.into())
        );
        assert_eq!(es.calls(), 2);
        assert!(v.authenticate(&b64("id_value:right")).await.is_ok());
        assert_eq!(es.calls(), 2);
    }

    #[tokio::test]
    async fn expired_entries_do_not_count() {
        let es = FakeEs::start(by_id()).await;
        let cfg = es_config(es.addr, &["apm-server.auth.api_key.limit=1"]);
        let v = ApiKeyVerifier::with_ttl(&cfg, Duration::from_millis(50));
        assert!(v.authenticate(&b64("id_value:1")).await.is_ok());
        assert_eq!(
            v.authenticate(&b64("id_value2:1")).await.unwrap_err(),
            AuthError::Backend(MSG_LIMIT.into())
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        // the first entry expired without being looked up: room again
        assert!(v.authenticate(&b64("id_value2:1")).await.is_ok());
        assert_eq!(es.calls(), 2);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_call() {
        let es = FakeEs::start(Arc::new(|_: &Seen, _| {
            std::thread::sleep(Duration::from_millis(50));
            (200, GRANTED.into())
        }))
        .await;
        let v = Arc::new(ApiKeyVerifier::try_new(&es_config(es.addr, &[])).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move { v.authenticate(&b64("id_value:k")).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(es.calls(), 1);
        assert!(v.inflight.lock().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_distinct_keys_respect_the_limit() {
        let es = FakeEs::start(Arc::new(|_: &Seen, _| {
            std::thread::sleep(Duration::from_millis(30));
            (200, GRANTED.into())
        }))
        .await;
        let v = Arc::new(
            ApiKeyVerifier::try_new(&es_config(es.addr, &["apm-server.auth.api_key.limit=3"]))
                .unwrap(),
        );
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let v = v.clone();
                tokio::spawn(async move { v.authenticate(&b64(&format!("id{i}:k"))).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e, AuthError::Backend(MSG_LIMIT.into())),
            }
        }
        assert_eq!(ok, 3);
        assert_eq!(es.calls(), 3);
        // backend errors give their reservation back
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let v = ApiKeyVerifier::try_new(&es_config(dead, &["apm-server.auth.api_key.limit=1"]))
            .unwrap();
        for i in 0..3 {
            let e = v.authenticate(&b64(&format!("id{i}:k"))).await.unwrap_err();
            assert!(
                matches!(e, AuthError::Backend(ref m) if m != MSG_LIMIT),
                "{e:?}"
            );
        }
    }

    #[test]
    fn authenticator_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ApiKeyVerifier>();
        assert_send_sync::<super::super::Authenticator>();
    }

    #[tokio::test]
    async fn limit_below_one_refuses_every_miss() {
        let es = FakeEs::start(by_id()).await;
        let v = ApiKeyVerifier::try_new(&es_config(es.addr, &["apm-server.auth.api_key.limit=0"]))
            .unwrap();
        assert_eq!(
            v.authenticate(&b64("id_value:k")).await.unwrap_err(),
            AuthError::Backend(MSG_LIMIT.into())
        );
        assert_eq!(es.calls(), 0);
    }

    #[test]
    fn bad_client_settings() {
        let c = crate::config::from_overrides([
            "apm-server.auth.api_key.enabled=true",
            "apm-server.auth.api_key.elasticsearch.ssl.certificate_authorities=[/nonexistent/ca.pem]",
        ])
        .unwrap();
        let e = ApiKeyVerifier::try_new(&c).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
