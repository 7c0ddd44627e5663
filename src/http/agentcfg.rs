//! Agent configuration endpoints, `GET|POST /config/v1/agents` (backend
//! group) and `/config/v1/rum/agents` (RUM group); see docs/intake.md and
//! docs/security.md.
//!
//! Order of checks: RUM only: CORS (preflight answered,
//! disallowed origin 403) → authentication (401/503) → anonymous per-IP
//! rate limit (429) → RUM only: kill switch (403) → method (405) → query
//! (400) → authorization of `agent_config` for the service (403/503) →
//! lookup in the cached configurations (or the Kibana fallback) → 200/304
//! or a fetch error.
//!
//! Invariants: every response written by the handler itself carries
//! `Cache-Control` (`max-age=300, must-revalidate` for errors, the cache
//! expiration for successes); every error text is chosen in
//! [`AgentCfgError`] (full text vs anonymous text); the POST body is read
//! with a size cap and a deadline; the lookup is an in-memory read, except
//! for the optional async Kibana fallback (`crate::agentcfg::kibana`).

use super::error::msg;
use super::{backend_group, response, rum_group, AppState};
use crate::agentcfg::{FetchError, Query};
use crate::auth::{Action, Resource, Unauthorized};
use actix_web::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_ENCODING, IF_NONE_MATCH};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use std::io::Read;
use std::sync::Arc;

/// `Cache-Control` of every error response.
pub const ERR_CACHE_CONTROL: &str = "max-age=300, must-revalidate";
/// Largest POST body accepted, compressed or not (a query is tiny).
pub const MAX_BODY: usize = 64 * 1024;

pub const MSG_INVALID_ES: &str = "Your Elasticsearch configuration does not support agent config queries. Check your configurations at `output.elasticsearch` or `apm-server.agent.config.elasticsearch`.";
pub const MSG_KIBANA_UNAUTHORIZED: &str = "APM Server is not authorized to query Kibana. Please configure apm-server.kibana.username and apm-server.kibana.password, and ensure the user has the necessary privileges.";
pub const MSG_NOT_READY: &str =
    "Agent configuration infrastructure is not ready. Please retry later.";

/// Every way an agent-config request fails, with its status and texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentCfgError {
    #[error("method not supported: {0}")]
    Method(String),
    #[error("service.name is required")]
    MissingService,
    /// The POST body could not be read or parsed (the parser's message).
    #[error("{0}")]
    Body(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl AgentCfgError {
    pub fn status(&self) -> StatusCode {
        match self {
            AgentCfgError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AgentCfgError::MissingService | AgentCfgError::Body(_) => StatusCode::BAD_REQUEST,
            AgentCfgError::Forbidden(_) | AgentCfgError::Fetch(FetchError::InvalidEsConfig) => {
                StatusCode::FORBIDDEN
            }
            AgentCfgError::Fetch(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `{"error": …}` text apm-server answers for each case.
    pub fn text(&self, anonymous: bool) -> String {
        match self {
            AgentCfgError::Method(_) if anonymous => "method not supported".into(),
            AgentCfgError::MissingService | AgentCfgError::Body(_) if anonymous => {
                "invalid query".into()
            }
            AgentCfgError::Fetch(FetchError::InvalidEsConfig) => MSG_INVALID_ES.into(),
            AgentCfgError::Fetch(FetchError::NotReady) => MSG_NOT_READY.into(),
            AgentCfgError::Fetch(FetchError::KibanaUnauthorized) if !anonymous => {
                MSG_KIBANA_UNAUTHORIZED.into()
            }
            AgentCfgError::Fetch(FetchError::KibanaSend(_)) if anonymous => {
                "sending request to kibana failed".into()
            }
            AgentCfgError::Fetch(FetchError::KibanaBody(_)) if anonymous => {
                "unable to read Kibana response body".into()
            }
            AgentCfgError::Fetch(FetchError::Other(_)) if anonymous => {
                msg::SERVICE_UNAVAILABLE.into()
            }
            other => other.to_string(),
        }
    }
}

impl From<Unauthorized> for AgentCfgError {
    fn from(u: Unauthorized) -> Self {
        AgentCfgError::Forbidden(u.0)
    }
}

/// `GET|POST /config/v1/agents`.
pub async fn backend(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let state = state.into_inner();
    backend_group(&req, &state, |auth, _| handle(&state, &req, payload, auth)).await
}

/// `GET|POST /config/v1/rum/agents`.
pub async fn rum(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let state = state.into_inner();
    rum_group(&req, &state, |auth, _| handle(&state, &req, payload, auth)).await
}

async fn handle(
    state: &Arc<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
    auth: crate::auth::AuthResult,
) -> HttpResponse {
    let anonymous = auth.is_anonymous();
    let result = async {
        let mut q = build_query(state, req, payload).await?;
        if q.service.environment.is_empty() {
            q.service.environment = state.cfg.apm_server.default_service_environment.clone();
        }
        auth.authorize(
            Action::AgentConfig,
            &Resource {
                agent_name: None,
                service_name: Some(&q.service.name),
            },
        )?;
        let insecure = anonymous.then_some(&state.cfg.apm_server.auth.anonymous.allow_agent[..]);
        let cfg = state.agent_configs.fetch(&q, insecure).await?;
        Ok::<_, AgentCfgError>((q, cfg))
    }
    .await;
    match result {
        Err(e) => {
            let mut r = response::error(req, e.status(), &e.text(anonymous));
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static(ERR_CACHE_CONTROL));
            r
        }
        Ok((q, cfg)) => {
            // apm-server's "applied" metric events are not emitted yet.
            let mut b = if q.etag == cfg.etag {
                response::builder(StatusCode::NOT_MODIFIED).finish()
            } else {
                response::json(req, StatusCode::OK, &cfg.settings)
            };
            let h = b.headers_mut();
            let max_age = state
                .cfg
                .apm_server
                .agent
                .config
                .cache
                .expiration
                .get()
                .as_secs();
            if let Ok(v) = HeaderValue::try_from(format!("max-age={max_age}, must-revalidate")) {
                h.insert(CACHE_CONTROL, v);
            }
            if let Ok(v) = HeaderValue::try_from(format!("\"{}\"", cfg.etag)) {
                h.insert(actix_web::http::header::ETAG, v);
            }
            h.insert(
                actix_web::http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Etag"),
            );
            b
        }
    }
}

/// The etag the agent already has: `If-None-Match` without any `"`, else
/// the `ifnonematch` query parameter, else empty.
fn request_etag(req: &HttpRequest, params: &[(String, String)]) -> String {
    if let Some(v) = req.headers().get(IF_NONE_MATCH) {
        return String::from_utf8_lossy(v.as_bytes()).replace('"', "");
    }
    param(params, "ifnonematch").unwrap_or_default()
}

fn param(params: &[(String, String)], key: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

async fn build_query(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Query, AgentCfgError> {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let mut q = match *req.method() {
        Method::GET => {
            let mut q = Query::default();
            q.service.name = param(&params, "service.name").unwrap_or_default();
            q.service.environment = param(&params, "service.environment").unwrap_or_default();
            q
        }
        Method::POST => {
            let deadline = state.cfg.apm_server.read_timeout.get();
            let body = match tokio::time::timeout(deadline, read_body(payload)).await {
                Ok(b) => b?,
                Err(_) => return Err(AgentCfgError::Body(msg::TIMED_OUT.into())),
            };
            let body = decompress(req, body)?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(AgentCfgError::Body("EOF".into()));
            }
            serde_json::from_slice::<Query>(&body)
                .map_err(|e| AgentCfgError::Body(e.to_string()))?
        }
        ref m => return Err(AgentCfgError::Method(m.to_string())),
    };
    if q.service.name.is_empty() {
        return Err(AgentCfgError::MissingService);
    }
    q.etag = request_etag(req, &params);
    Ok(q)
}

async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, AgentCfgError> {
    let mut out = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AgentCfgError::Body(e.to_string()))?;
        if out.len() + chunk.len() > MAX_BODY {
            return Err(AgentCfgError::Body("request body too large".into()));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Decompresses a small body: by `Content-Encoding`, else by sniffing a
/// gzip or zlib header.
fn decompress(req: &HttpRequest, body: Vec<u8>) -> Result<Vec<u8>, AgentCfgError> {
    if body.is_empty() {
        return Ok(body);
    }
    let enc = req
        .headers()
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let gzip = match enc {
        Some("gzip") => true,
        Some("deflate") => false,
        _ if body.starts_with(&[0x1f, 0x8b]) => true,
        _ if body[0] & 0x0f == 8 => false,
        _ => return Ok(body),
    };
    let mut out = Vec::new();
    let cap = MAX_BODY as u64 * 16;
    let res = if gzip {
        flate2::read::GzDecoder::new(&body[..])
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))
    } else {
        flate2::read::ZlibDecoder::new(&body[..])
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("zlib: {e}"))
    };
    res.map_err(AgentCfgError::Body)?;
    if out.len() as u64 > cap {
        return Err(AgentCfgError::Body("request body too large".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(enc: Option<&str>, body: Vec<u8>) -> Result<Vec<u8>, AgentCfgError> {
        let mut r = actix_web::test::TestRequest::default();
        if let Some(e) = enc {
            r = r.insert_header((CONTENT_ENCODING, e));
        }
        decompress(&r.to_http_request(), body)
    }

    #[test]
    fn body_decompression() {
        use std::io::Write;
        let q = br#"{"service":{"name":"a"}}"#.to_vec();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&q).unwrap();
        let z = z.finish().unwrap();
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        g.write_all(&q).unwrap();
        let g = g.finish().unwrap();
        assert_eq!(body_of(None, q.clone()).unwrap(), q);
        assert_eq!(body_of(Some("deflate"), z.clone()).unwrap(), q);
        assert_eq!(body_of(None, z).unwrap(), q, "zlib sniffed");
        assert_eq!(body_of(None, g.clone()).unwrap(), q, "gzip sniffed");
        assert_eq!(body_of(Some("gzip"), g).unwrap(), q);
        assert!(body_of(Some("gzip"), q.clone()).is_err());
        // Go quirk: a plain body starting with `x` is taken for zlib and fails.
        assert!(body_of(None, b"xyz".to_vec()).is_err());
    }

    #[test]
    fn error_table() {
        let m = AgentCfgError::Method("PUT".into());
        assert_eq!(m.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(m.text(false), "method not supported: PUT");
        assert_eq!(m.text(true), "method not supported");
        assert_eq!(AgentCfgError::MissingService.text(true), "invalid query");
        assert_eq!(
            AgentCfgError::MissingService.text(false),
            "service.name is required"
        );
        assert_eq!(AgentCfgError::Body("EOF".into()).text(false), "EOF");
        let nr = AgentCfgError::from(FetchError::NotReady);
        assert_eq!(nr.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(nr.text(true), MSG_NOT_READY);
        let inv = AgentCfgError::from(FetchError::InvalidEsConfig);
        assert_eq!(inv.status(), StatusCode::FORBIDDEN);
        assert_eq!(inv.text(true), MSG_INVALID_ES);
        // O.119, O.122 and the Kibana rows.
        let other = AgentCfgError::from(FetchError::Other("fetch failed".into()));
        assert_eq!(other.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(other.text(false), "fetch failed");
        assert_eq!(other.text(true), "service unavailable");
        let ku = AgentCfgError::from(FetchError::KibanaUnauthorized);
        assert_eq!(ku.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ku.text(false), MSG_KIBANA_UNAUTHORIZED);
        assert_eq!(ku.text(true), "Unauthorized");
        let ks = AgentCfgError::from(FetchError::KibanaSend("connection refused".into()));
        assert_eq!(
            ks.text(false),
            "sending request to kibana failed: connection refused"
        );
        assert_eq!(ks.text(true), "sending request to kibana failed");
        let kb = AgentCfgError::from(FetchError::KibanaBody("eof".into()));
        assert_eq!(kb.text(false), "unable to read Kibana response body: eof");
        assert_eq!(kb.text(true), "unable to read Kibana response body");
    }
}
