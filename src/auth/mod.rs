//! Authentication and authorization of agents (behaviour: docs/security.md).
//!
//! [`Authenticator::authenticate`] decides from the `Authorization` header
//! alone, before any body is read: no auth configured (`none`), secret token,
//! API key, or anonymous. The resulting [`AuthResult`] authorizes actions per
//! resource ([`AuthResult::authorize`]); the allow-list validator stage calls
//! it for every event of a request.
//!
//! Invariants: secrets are compared in constant time and never logged; an
//! auth *failure* (401) is distinct from a *backend* error (503).

pub mod anonymous;
pub mod api_key;
pub mod cache;
pub mod header;
pub mod secret_token;

use crate::config::Config;
use std::sync::Arc;

pub use anonymous::AllowLists;
pub use api_key::{ApiKeyConfigError, ApiKeyInfo, ApiKeyVerifier};

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No auth configured: everything allowed, nothing rate limited.
    None,
    SecretToken,
    ApiKey,
    Anonymous,
}

/// What a request wants to do; each maps to one API-key privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    EventIngest,
    AgentConfig,
    SourcemapUpload,
}

impl Action {
    /// The API-key privilege the action needs.
    pub fn privilege(self) -> &'static str {
        match self {
            Action::EventIngest => "event:write",
            Action::AgentConfig => "config_agent:read",
            Action::SourcemapUpload => "sourcemap:write",
        }
    }
}

/// The names an action is checked against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resource<'a> {
    pub agent_name: Option<&'a str>,
    pub service_name: Option<&'a str>,
}

/// Authentication failed or could not be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Credentials missing, malformed or wrong → 401 with this text.
    #[error("{0}")]
    Failed(String),
    /// The check itself failed (Elasticsearch unreachable, API-key limit) → 503; text only logged.
    #[error("{0}")]
    Backend(String),
}

/// An action was denied → 403 with this text (`unauthorized: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthorized(pub String);

pub const MSG_FAILED: &str = "authentication failed";
pub const MSG_MISSING: &str = "authentication failed: missing or improperly formatted Authorization header: expected 'Authorization: Bearer secret_token' or 'Authorization: ApiKey base64(API key ID:API key)'";

/// Privileges of a verified API key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiKeyPrivileges {
    pub event_write: bool,
    pub config_agent_read: bool,
    pub sourcemap_write: bool,
}

#[derive(Debug, Clone)]
enum Authorizer {
    AllowAll,
    ApiKey(ApiKeyPrivileges, Option<Arc<ApiKeyInfo>>),
    Anonymous(Arc<AllowLists>),
}

/// Who the caller is and what it may do.
#[derive(Debug, Clone)]
pub struct AuthResult {
    pub method: Method,
    authorizer: Authorizer,
}

impl AuthResult {
    /// Everything allowed (no auth configured).
    pub fn none() -> Self {
        AuthResult {
            method: Method::None,
            authorizer: Authorizer::AllowAll,
        }
    }

    pub fn secret_token() -> Self {
        AuthResult {
            method: Method::SecretToken,
            authorizer: Authorizer::AllowAll,
        }
    }

    pub fn api_key(p: ApiKeyPrivileges) -> Self {
        AuthResult {
            method: Method::ApiKey,
            authorizer: Authorizer::ApiKey(p, None),
        }
    }

    /// A verified API key with its id and username (for logs).
    pub fn api_key_verified(info: ApiKeyInfo) -> Self {
        AuthResult {
            method: Method::ApiKey,
            authorizer: Authorizer::ApiKey(info.privileges, Some(Arc::new(info))),
        }
    }

    /// Id and username of the API key, when authenticated by one.
    pub fn api_key_info(&self) -> Option<&ApiKeyInfo> {
        match &self.authorizer {
            Authorizer::ApiKey(_, info) => info.as_deref(),
            _ => None,
        }
    }

    pub fn anonymous(lists: Arc<AllowLists>) -> Self {
        AuthResult {
            method: Method::Anonymous,
            authorizer: Authorizer::Anonymous(lists),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.method == Method::Anonymous
    }

    /// Checks `action` on `res`: always allowed with no auth or the secret
    /// token; by the key's privileges for an API key; by the allow lists for
    /// anonymous requests.
    pub fn authorize(&self, action: Action, res: &Resource<'_>) -> Result<(), Unauthorized> {
        match &self.authorizer {
            Authorizer::AllowAll => Ok(()),
            Authorizer::ApiKey(p, _) => {
                let ok = match action {
                    Action::EventIngest => p.event_write,
                    Action::AgentConfig => p.config_agent_read,
                    Action::SourcemapUpload => p.sourcemap_write,
                };
                if ok {
                    Ok(())
                } else {
                    Err(Unauthorized(format!(
                        "unauthorized: API Key not permitted action \"{}\"",
                        action.privilege()
                    )))
                }
            }
            Authorizer::Anonymous(lists) => lists.authorize(action, res),
        }
    }
}

/// Decides the [`AuthResult`] of a request from its `Authorization` header.
///
/// Build one per server and share it (`Arc`): it holds the API-key cache and
/// the Elasticsearch client used to verify keys.
pub struct Authenticator {
    secret_token: Option<secret_token::SecretToken>,
    api_key: Option<ApiKeyVerifier>,
    anonymous: Option<Arc<AllowLists>>,
}

impl Authenticator {
    /// Never fails: if API keys are enabled but their Elasticsearch client
    /// cannot be built (bad host, unreadable CA file…), the error is logged
    /// and every API-key request gets a backend error (503). Prefer
    /// [`Authenticator::try_new`] at start-up to refuse such a config.
    pub fn new(cfg: &Config) -> Self {
        Self::build(
            cfg,
            cfg.apm_server
                .auth
                .api_key
                .enabled
                .then(|| ApiKeyVerifier::new(cfg)),
        )
    }

    /// Like [`Authenticator::new`], but fails on invalid API-key
    /// Elasticsearch settings (a start-up error naming the problem).
    pub fn try_new(cfg: &Config) -> Result<Self, ApiKeyConfigError> {
        let api_key = if cfg.apm_server.auth.api_key.enabled {
            Some(ApiKeyVerifier::try_new(cfg)?)
        } else {
            None
        };
        Ok(Self::build(cfg, api_key))
    }

    fn build(cfg: &Config, api_key: Option<ApiKeyVerifier>) -> Self {
        let auth = &cfg.apm_server.auth;
        Authenticator {
            secret_token: (!auth.secret_token.is_empty())
                .then(|| secret_token::SecretToken::new(auth.secret_token.clone())),
            api_key,
            anonymous: cfg
                .anonymous_enabled()
                .then(|| Arc::new(AllowLists::from_config(&auth.anonymous))),
        }
    }

    /// Whether any authentication is configured.
    pub fn configured(&self) -> bool {
        self.secret_token.is_some() || self.api_key.is_some()
    }

    /// By the header's scheme: none → anonymous (if allowed, else 401),
    /// `ApiKey` → verified key, `Bearer` → secret token, anything else → 401.
    /// With no auth configured every request is allowed.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<AuthResult, AuthError> {
        if !self.configured() {
            return Ok(AuthResult::none());
        }
        let (kind, token) = header::parse(authorization);
        match kind {
            "" => match &self.anonymous {
                Some(lists) => Ok(AuthResult::anonymous(Arc::clone(lists))),
                None => Err(AuthError::Failed(MSG_MISSING.into())),
            },
            header::API_KEY => match &self.api_key {
                Some(v) => v.authenticate(token).await.map(AuthResult::api_key_verified),
                None => Err(AuthError::Failed(MSG_FAILED.into())),
            },
            header::BEARER => match &self.secret_token {
                Some(t) if t.matches(token) => Ok(AuthResult::secret_token()),
                _ => Err(AuthError::Failed(MSG_FAILED.into())),
            },
            other => Err(AuthError::Failed(format!(
                "authentication failed: unknown Authentication header {other}: expected 'Authorization: Bearer secret_token' or 'Authorization: ApiKey base64(API key ID:API key)'"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::api_key::tests::{b64, es_config, FakeEs, Seen, GRANTED};
    use super::*;
    use crate::config::from_overrides;

    const MSG_UNKNOWN_MAGIC: &str = "authentication failed: unknown Authentication header magic: expected 'Authorization: Bearer secret_token' or 'Authorization: ApiKey base64(API key ID:API key)'";

    fn auth(ov: &[&str]) -> Authenticator {
        Authenticator::try_new(&from_overrides(ov.iter().map(|s| s.to_string())).unwrap()).unwrap()
    }

    fn failed(r: Result<AuthResult, AuthError>) -> String {
        match r {
            Err(AuthError::Failed(m)) => m,
            other => panic!("expected an auth failure, got {other:?}"),
        }
    }

    // upstream case F.55
    #[tokio::test]
    async fn without_auth_configured_every_header_is_allowed() {
        let a = auth(&[]);
        assert!(!a.configured());
        for h in [
            None,
            Some("ApiKey"),
            Some("ApiKey x"),
            Some("Bearer "),
            Some("garbage"),
        ] {
            let r = a.authenticate(h).await.unwrap();
            assert_eq!(r.method, Method::None);
            for act in [
                Action::EventIngest,
                Action::AgentConfig,
                Action::SourcemapUpload,
            ] {
                assert!(r.authorize(act, &Resource::default()).is_ok());
            }
        }
    }

    // upstream case F.56
    #[tokio::test]
    async fn a_missing_or_unknown_authorization_header_is_refused() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for a in [
            auth(&["apm-server.auth.secret_token=valid"]),
            Authenticator::try_new(&es_config(dead, &[])).unwrap(),
        ] {
            assert_eq!(failed(a.authenticate(None).await), MSG_MISSING);
            assert_eq!(failed(a.authenticate(Some("Bearer")).await), MSG_MISSING);
            assert_eq!(
                failed(a.authenticate(Some("magic x")).await),
                MSG_UNKNOWN_MAGIC
            );
        }
    }

    // upstream case F.57
    #[tokio::test]
    async fn the_secret_token_must_match_exactly() {
        let a = auth(&["apm-server.auth.secret_token=valid"]);
        assert_eq!(
            failed(a.authenticate(Some("Bearer invalid")).await),
            MSG_FAILED
        );
        let r = a.authenticate(Some("Bearer valid")).await.unwrap();
        assert_eq!(r.method, Method::SecretToken);
        assert!(r
            .authorize(Action::SourcemapUpload, &Resource::default())
            .is_ok());
        // API keys not enabled → authentication failed
        assert_eq!(failed(a.authenticate(Some("ApiKey abc")).await), MSG_FAILED);
        // scheme names are case-sensitive (F.59)
        assert!(failed(a.authenticate(Some("bearer valid")).await)
            .contains("unknown Authentication header bearer"));
    }

    // upstream case F.58
    #[tokio::test]
    async fn anonymous_requests_are_allowed_only_when_enabled() {
        let a = auth(&["apm-server.auth.anonymous.enabled=true"]);
        assert_eq!(a.authenticate(None).await.unwrap().method, Method::None);
        let a = auth(&[
            "apm-server.auth.secret_token=valid",
            "apm-server.auth.anonymous.enabled=true",
        ]);
        let r = a.authenticate(None).await.unwrap();
        assert_eq!(r.method, Method::Anonymous);
        assert!(r.is_anonymous());
        // credentials present are always checked: no fallback to anonymous
        assert_eq!(
            failed(a.authenticate(Some("Bearer wrong")).await),
            MSG_FAILED
        );
    }

    // upstream case G.60, G.61, G.62
    #[tokio::test]
    async fn an_api_key_is_authorized_by_its_privileges() {
        let es = FakeEs::start(std::sync::Arc::new(|_: &Seen, _| (200, GRANTED.into()))).await;
        let a = Authenticator::try_new(&es_config(es.addr, &[])).unwrap();
        let h = format!("ApiKey {}", b64("id_value:key_value"));
        let r = a.authenticate(Some(&h)).await.unwrap();
        assert_eq!(r.method, Method::ApiKey);
        let info = r.api_key_info().unwrap();
        assert_eq!(
            (info.id.as_str(), info.username.as_str()),
            ("id_value", "api_key_username")
        );
        let res = Resource::default();
        assert!(r.authorize(Action::AgentConfig, &res).is_ok());
        assert!(r.authorize(Action::EventIngest, &res).is_ok());
        assert_eq!(
            r.authorize(Action::SourcemapUpload, &res).unwrap_err().0,
            "unauthorized: API Key not permitted action \"sourcemap:write\""
        );
        // G.62: API keys only, `Bearer ` with empty token
        assert_eq!(failed(a.authenticate(Some("Bearer ")).await), MSG_FAILED);
        // G.63 / G.64 through the authenticator
        assert!(failed(a.authenticate(Some("ApiKey invalid_base64")).await)
            .ends_with("illegal base64 data at input byte 7"));
        assert_eq!(es.calls(), 1);
    }

    // upstream case G.65
    #[tokio::test]
    async fn an_unreachable_elasticsearch_is_a_backend_error_not_a_401() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let a = Authenticator::try_new(&es_config(dead, &[])).unwrap();
        let h = format!("ApiKey {}", b64("id:key"));
        assert!(matches!(
            a.authenticate(Some(&h)).await,
            Err(AuthError::Backend(_))
        ));
    }

    #[tokio::test]
    async fn new_never_fails_but_answers_backend_error() {
        let cfg = from_overrides([
            "apm-server.auth.api_key.enabled=true",
            "apm-server.auth.api_key.elasticsearch.hosts=[\"ftp://nope\"]",
        ])
        .unwrap();
        assert!(Authenticator::try_new(&cfg).is_err());
        let a = Authenticator::new(&cfg);
        assert!(a.configured());
        let h = format!("ApiKey {}", b64("id:key"));
        assert!(matches!(
            a.authenticate(Some(&h)).await,
            Err(AuthError::Backend(_))
        ));
    }
}
