//! HTTP concerns: routes, handlers, middleware and the mapping of errors to
//! responses (see docs/intake.md and docs/security.md).
//!
//! Route groups and the order of their checks:
//! * backend (`/intake/v2/events`): response headers, authentication (required), handler;
//! * RUM (`/intake/v2|v3/rum/events`): response headers, CORS, authentication,
//!   RUM kill switch, handler;
//! * root (`/`): response headers, authentication (optional), server info;
//! * agent config (`/config/v1/agents` backend group, `/config/v1/rum/agents`
//!   RUM group): see [`agentcfg`]; `apm-server.expvar.url` when enabled (no
//!   auth, see [`metrics`]);
//! * OTLP/HTTP (`/v1/traces`, `/v1/metrics`, `/v1/logs`): backend group, see [`otlp`];
//! * anything else: `404 {"error":"404 page not found"}`.
//!
//! Every response carries `X-Content-Type-Options: nosniff`; a panic in a
//! handler becomes `500 {"error":"panic handling request"}`.

pub mod agentcfg;
pub mod body;
pub mod client_ip;
pub mod cors;
pub mod error;
pub mod intake;
pub mod limits;
pub mod metrics;
pub mod otlp;
pub mod otlp_export;
pub mod response;
pub mod root;
pub mod sourcemap_upload;
pub mod tls;

use crate::auth::{AuthError, AuthResult, Authenticator};
use crate::budget::MemoryBudget;
use crate::config::Config;
use crate::model::RequestBase;
use crate::pipeline::{Intake, RequestCtx};
use crate::ratelimit::RateLimiter;
use crate::telemetry::Telemetry;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use client_ip::{ClientAddr, TrustedProxies};
use cors::Cors;
use error::msg;
use futures_util::FutureExt;
use response::ExtraHeaders;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// What `GET /` reports.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub version: String,
    pub build_date: String,
    pub build_sha: String,
}

/// Shared by every handler.
pub struct AppState {
    pub cfg: Arc<Config>,
    pub telemetry: Arc<Telemetry>,
    pub intake: Intake,
    pub budget: Arc<MemoryBudget>,
    pub authenticator: Authenticator,
    /// `apm-server.max_concurrent_decoders` slots.
    pub decoders: Arc<tokio::sync::Semaphore>,
    /// `apm-server.sourcemap.max_concurrent_uploads` slots.
    pub uploads: tokio::sync::Semaphore,
    pub headers: ExtraHeaders,
    pub rum_headers: ExtraHeaders,
    pub info: ServerInfo,
    /// Whether the output's destination is reachable.
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Per-IP token buckets of anonymous requests.
    pub limiter: Arc<RateLimiter>,
    /// The source-map store, when source mapping is on (shared with the pipeline).
    pub sourcemaps: Option<Arc<crate::sourcemap::Store>>,
    /// CORS rules of the RUM routes.
    pub cors: Cors,
    /// Proxies whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// Cached agent configurations, refreshed in the background.
    pub agent_configs: Arc<crate::agentcfg::AgentConfigs>,
    /// Listener limits' metrics (connections, header size, body bytes).
    pub http_metrics: limits::HttpMetrics,
}

/// Registers every route on an actix-web app.
pub fn configure(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    let expvar = state.cfg.apm_server.expvar.clone();
    move |c: &mut web::ServiceConfig| {
        c.app_data(web::Data::from(state))
            .route("/", web::route().to(root::handle))
            .route("/intake/v2/events", web::route().to(backend_intake))
            .route("/intake/v2/rum/events", web::route().to(rum_intake))
            .route("/intake/v3/rum/events", web::route().to(rum_intake))
            .route(
                "/assets/v1/sourcemaps",
                web::route().to(sourcemap_upload::handle),
            )
            .route("/v1/traces", web::route().to(otlp::traces))
            .route("/v1/metrics", web::route().to(otlp::metrics))
            .route("/v1/logs", web::route().to(otlp::logs))
            .route("/config/v1/agents", web::route().to(agentcfg::backend))
            .route("/config/v1/rum/agents", web::route().to(agentcfg::rum));
        if expvar.enabled {
            c.route(&expvar.url, web::route().to(metrics::expvar));
        }
        c.default_service(web::route().to(not_found));
    }
}

/// Counts requests by route and status.
pub async fn observe<B>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error>
where
    B: actix_web::body::MessageBody + 'static,
{
    let telemetry = req
        .app_data::<web::Data<AppState>>()
        .map(|s| Arc::clone(&s.telemetry));
    let res = next.call(req).await?;
    if let Some(t) = telemetry {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "other".into());
        t.requests
            .with_label_values(&[&route, res.status().as_str()])
            .inc();
    }
    Ok(res)
}

/// Runs a handler future; a panic becomes `500 {"error":"panic handling request"}`.
pub async fn guarded<F>(req: &HttpRequest, fut: F) -> HttpResponse
where
    F: std::future::Future<Output = HttpResponse>,
{
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(path = req.path(), "handler panicked");
            response::error(req, StatusCode::INTERNAL_SERVER_ERROR, msg::PANIC)
        }
    }
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    response::error(&req, StatusCode::NOT_FOUND, msg::NOT_FOUND)
}

/// Runs authentication; `Err` is the response to send (401 / 503).
pub async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<AuthResult, HttpResponse> {
    // A header that is not ASCII is still a header: checked as sent (it
    // cannot match), never taken for an absent one.
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    match state.authenticator.authenticate(header.as_deref()).await {
        Ok(a) => Ok(a),
        Err(AuthError::Failed(text)) => Err(response::error(req, StatusCode::UNAUTHORIZED, &text)),
        Err(AuthError::Backend(text)) => {
            tracing::warn!(error = %text, "authentication backend error");
            Err(response::error(
                req,
                StatusCode::SERVICE_UNAVAILABLE,
                msg::SERVICE_UNAVAILABLE,
            ))
        }
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The request-derived event fields (receive time, client address, user agent).
fn request_base(state: &AppState, req: &HttpRequest, addr: &ClientAddr, rum: bool) -> RequestBase {
    base_of(state, addr, user_agent(req), rum)
}

/// The request's `User-Agent` lines joined by `, `; None without one.
fn user_agent(req: &HttpRequest) -> Option<String> {
    let ua: Vec<&str> = req
        .headers()
        .get_all(actix_web::http::header::USER_AGENT)
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!ua.is_empty()).then(|| ua.join(", "))
}

/// The event fields of a request received now from `addr`; the client
/// address and user agent only with `apm-server.capture_personal_data`.
pub fn base_of(
    state: &AppState,
    addr: &ClientAddr,
    user_agent: Option<String>,
    rum: bool,
) -> RequestBase {
    let mut base = RequestBase {
        received_ns: now_ns(),
        rum,
        ..Default::default()
    };
    if state.cfg.apm_server.capture_personal_data {
        base.client_ip = addr.client_ip;
        base.source_port = addr.source_port;
        base.nat_ip = addr.nat_ip;
        base.user_agent = user_agent;
    }
    base
}

/// Authentication, then one token of the anonymous client's per-IP bucket
/// (see docs/security.md).
async fn authenticate_and_limit(
    state: &AppState,
    req: &HttpRequest,
    addr: &ClientAddr,
) -> Result<AuthResult, HttpResponse> {
    let auth = authenticate(state, req).await?;
    if auth.is_anonymous()
        && !state
            .limiter
            .allow(crate::ratelimit::key_of(addr.client_ip))
    {
        state.telemetry.rate_limited_requests.inc();
        return Err(response::error(
            req,
            StatusCode::TOO_MANY_REQUESTS,
            msg::RATE_LIMITED,
        ));
    }
    Ok(auth)
}

/// The client address of a request (see [`client_ip`] and docs/security.md).
pub fn client_addr(state: &AppState, req: &HttpRequest) -> ClientAddr {
    client_ip::derive(req.peer_addr(), req.headers(), &state.trusted)
}

/// CORS for RUM routes: `Err` is the answer already (a
/// preflight's 200 or a disallowed origin's 403); `Ok` is the
/// `Access-Control-Allow-Origin` header to add to the final response.
// The `Err` is the finished response, built once per request.
#[allow(clippy::result_large_err)]
pub fn rum_cors(
    state: &AppState,
    req: &HttpRequest,
) -> Result<(&'static str, String), HttpResponse> {
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    if req.method() == actix_web::http::Method::OPTIONS {
        let mut b = response::builder(StatusCode::OK);
        for (k, v) in state.cors.preflight_headers(&origin) {
            b.insert_header((k, v));
        }
        return Err(b.finish());
    }
    state
        .cors
        .check(&origin)
        .map_err(|text| response::error(req, StatusCode::FORBIDDEN, &text))
}

/// The backend route group: panic guard, authentication
/// (required), the anonymous per-IP token, then `handler`; global response
/// headers on whatever it answers.
pub async fn backend_group<F, Fut>(
    req: &HttpRequest,
    state: &Arc<AppState>,
    handler: F,
) -> HttpResponse
where
    F: FnOnce(AuthResult, ClientAddr) -> Fut,
    Fut: std::future::Future<Output = HttpResponse>,
{
    let mut resp = guarded(req, async {
        let addr = client_addr(state, req);
        match authenticate_and_limit(state, req, &addr).await {
            Ok(auth) => handler(auth, addr).await,
            Err(r) => r,
        }
    })
    .await;
    state.headers.apply(&mut resp);
    resp
}

/// The RUM route group: panic guard, CORS (preflights answered
/// here), authentication, the anonymous per-IP token, the RUM kill switch,
/// then `handler`; global then RUM response headers on the answer.
pub async fn rum_group<F, Fut>(req: &HttpRequest, state: &Arc<AppState>, handler: F) -> HttpResponse
where
    F: FnOnce(AuthResult, ClientAddr) -> Fut,
    Fut: std::future::Future<Output = HttpResponse>,
{
    let mut resp = guarded(req, async {
        let (name, value) = match rum_cors(state, req) {
            Ok(h) => h,
            Err(r) => return r,
        };
        let addr = client_addr(state, req);
        let mut r = match authenticate_and_limit(state, req, &addr).await {
            Err(r) => r,
            Ok(_) if !state.cfg.apm_server.rum.enabled => {
                response::error(req, StatusCode::FORBIDDEN, msg::RUM_DISABLED)
            }
            Ok(auth) => handler(auth, addr).await,
        };
        if let (Ok(k), Ok(v)) = (
            actix_web::http::header::HeaderName::try_from(name),
            actix_web::http::header::HeaderValue::try_from(value),
        ) {
            r.headers_mut().insert(k, v);
        }
        r
    })
    .await;
    state.headers.apply(&mut resp);
    state.rum_headers.apply(&mut resp);
    resp
}

async fn backend_intake(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let state = state.into_inner();
    backend_group(&req, &state, |auth, addr| {
        run_intake(&state, &req, payload, auth, addr, false)
    })
    .await
}

async fn rum_intake(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let state = state.into_inner();
    rum_group(&req, &state, |auth, addr| {
        run_intake(&state, &req, payload, auth, addr, true)
    })
    .await
}

async fn run_intake(
    state: &Arc<AppState>,
    req: &HttpRequest,
    payload: web::Payload,
    auth: AuthResult,
    addr: ClientAddr,
    rum: bool,
) -> HttpResponse {
    if let Err(e) = intake::precheck(req) {
        return intake::IntakeResult {
            terminal: Some(e),
            ..Default::default()
        }
        .respond(req);
    }
    let deadline = tokio::time::Instant::now() + state.cfg.apm_server.read_timeout.get();
    let Ok(Ok(_slot)) =
        tokio::time::timeout_at(deadline, Arc::clone(&state.decoders).acquire_owned()).await
    else {
        return intake::timed_out(req);
    };
    let base = request_base(state, req, &addr, rum);
    let rate_key = auth
        .is_anonymous()
        .then(|| crate::ratelimit::key_of(addr.client_ip));
    let ctx = RequestCtx {
        base,
        auth,
        rate_key,
        metadata: OnceLock::new(),
    };
    match intake::IntakeRun::new(Arc::clone(state), ctx)
        .run(req, payload, deadline)
        .await
    {
        Ok(result) => result.respond(req),
        Err(intake::TimedOut) => intake::timed_out(req),
    }
}
