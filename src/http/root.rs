//! Server information, `GET|HEAD /` (see docs/intake.md): the body only for
//! authenticated callers (or when no auth is configured).

use super::error::msg;
use super::{response, AppState};
use crate::auth::AuthError;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
struct Info<'a> {
    build_date: &'a str,
    build_sha: &'a str,
    publish_ready: bool,
    version: &'a str,
}

pub async fn handle(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    super::guarded(&req, info(&req, &state)).await
}

async fn info(req: &HttpRequest, state: &AppState) -> HttpResponse {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Authentication is optional here: a failure downgrades to anonymous.
    let anonymous = match state.authenticator.authenticate(header).await {
        Ok(a) => a.is_anonymous(),
        Err(AuthError::Failed(_)) => true,
        Err(AuthError::Backend(text)) => {
            tracing::warn!(error = %text, "authentication backend error");
            let mut r = response::error(
                req,
                StatusCode::SERVICE_UNAVAILABLE,
                msg::SERVICE_UNAVAILABLE,
            );
            state.headers.apply(&mut r);
            return r;
        }
    };
    let mut resp = if req.method() != Method::GET && req.method() != Method::HEAD {
        response::error(req, StatusCode::METHOD_NOT_ALLOWED, msg::ROOT_METHOD)
    } else if anonymous {
        response::builder(StatusCode::OK).finish()
    } else {
        let i = &state.info;
        response::json(
            req,
            StatusCode::OK,
            &Info {
                build_date: &i.build_date,
                build_sha: &i.build_sha,
                publish_ready: (state.ready)(),
                version: &i.version,
            },
        )
    };
    state.headers.apply(&mut resp);
    resp
}
