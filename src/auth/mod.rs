//! Authentication and authorization of agents (security.md).
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
pub mod header;
pub mod secret_token;

use crate::config::Config;
use std::sync::Arc;

pub use anonymous::AllowLists;

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No auth configured: everything allowed, nothing rate limited.
    None,
    SecretToken,
    ApiKey,
    Anonymous,
}

/// What a request wants to do (security.md §6).
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
    ApiKey(ApiKeyPrivileges),
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
            authorizer: Authorizer::ApiKey(p),
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

    /// Checks `action` on `res` (security.md §4.4, §5.3).
    pub fn authorize(&self, action: Action, res: &Resource<'_>) -> Result<(), Unauthorized> {
        match &self.authorizer {
            Authorizer::AllowAll => Ok(()),
            Authorizer::ApiKey(p) => {
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
pub struct Authenticator {
    secret_token: Option<secret_token::SecretToken>,
    api_key_enabled: bool,
    anonymous: Option<Arc<AllowLists>>,
}

impl Authenticator {
    pub fn new(cfg: &Config) -> Self {
        let auth = &cfg.apm_server.auth;
        Authenticator {
            secret_token: (!auth.secret_token.is_empty())
                .then(|| secret_token::SecretToken::new(auth.secret_token.clone())),
            api_key_enabled: auth.api_key.enabled,
            anonymous: cfg
                .anonymous_enabled()
                .then(|| Arc::new(AllowLists::from_config(&auth.anonymous))),
        }
    }

    /// Whether any authentication is configured.
    pub fn configured(&self) -> bool {
        self.secret_token.is_some() || self.api_key_enabled
    }

    /// security.md §2.
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
            header::API_KEY => {
                if !self.api_key_enabled {
                    return Err(AuthError::Failed(MSG_FAILED.into()));
                }
                Err(AuthError::Backend("API key verification is not available".into()))
            }
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
