//! The legacy apm-server 7.x source-map upload API,
//! `POST /assets/v1/sourcemaps` (sourcemap.md §8), kept on purpose although
//! apm-server 8+ removed it (intake.md §2).
//!
//! Checks, in order: authentication (required: 401 without or with bad
//! credentials), authorization (`sourcemap:write` for API keys; anonymous
//! is always 403), the kill switch (403 unless RUM and source mapping are
//! enabled), method (405 unless POST), content type (400 unless
//! `multipart/form-data`), then the form: `service_name`, `service_version`,
//! `bundle_filepath` and the `sourcemap` file. The map is validated, written
//! to `.apm-source-map` in Kibana's format, and the answer is `202` with an
//! empty body.
//!
//! Invariants: the body is read with a bound of `max_sourcemap_size` plus a
//! small allowance for the form's other parts, within `read_timeout`; client
//! input never panics the handler.

use super::error::msg;
use super::{authenticate, guarded, response, AppState};
use crate::auth::{Action, Resource};
use crate::sourcemap::store::UploadError;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::sync::Arc;

/// Bytes allowed on top of `max_sourcemap_size` for the text fields and
/// multipart framing.
const FORM_OVERHEAD: u64 = 64 * 1024;
/// Most bytes of one text field.
const MAX_TEXT_FIELD: u64 = 16 * 1024;

pub const MSG_DISABLED: &str = "forbidden request: source map uploads are disabled. Enable `apm-server.rum.enabled` and `apm-server.rum.source_mapping.enabled` to upload source maps.";
pub const MSG_MISSING_FIELDS: &str = "data validation error: error validating sourcemap: bundle_filepath, service_name and service_version must be sent";
pub const MSG_MISSING_FILE: &str =
    "data validation error: error validating sourcemap: sourcemap must be sent";
pub const MSG_METHOD: &str = "method not supported: only POST is allowed";

/// The upload form.
#[derive(Default)]
struct Form {
    service_name: String,
    service_version: String,
    bundle_filepath: String,
    sourcemap: Option<Bytes>,
}

enum FormError {
    TooLarge(u64),
    Decode(String),
}

async fn read_body(mut payload: web::Payload, limit: u64) -> Result<Bytes, FormError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| FormError::Decode(format!("cannot read body: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(FormError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn parse_form(body: Bytes, boundary: String, max_map: u64) -> Result<Form, FormError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .for_field("sourcemap", max_map)
            .per_field(MAX_TEXT_FIELD),
    );
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut form = Form::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(form_error(e, max_map)),
        };
        let name = field.name().unwrap_or("").to_string();
        let data = field.bytes().await.map_err(|e| form_error(e, max_map))?;
        let text = || String::from_utf8_lossy(&data).trim().to_string();
        match name.as_str() {
            "service_name" => form.service_name = text(),
            "service_version" => form.service_version = text(),
            "bundle_filepath" => form.bundle_filepath = text(),
            "sourcemap" => form.sourcemap = Some(data),
            _ => {}
        }
    }
    Ok(form)
}

fn form_error(e: multer::Error, max_map: u64) -> FormError {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() == Some("sourcemap") =>
        {
            FormError::TooLarge(max_map)
        }
        e => FormError::Decode(e.to_string()),
    }
}

/// `POST /assets/v1/sourcemaps`.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let state = state.into_inner();
    let mut resp = guarded(&req, upload(&req, payload, &state)).await;
    state.headers.apply(&mut resp);
    resp
}

async fn upload(req: &HttpRequest, payload: web::Payload, state: &Arc<AppState>) -> HttpResponse {
    let auth = match authenticate(state, req).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Err(u) = auth.authorize(Action::SourcemapUpload, &Resource::default()) {
        return response::error(req, StatusCode::FORBIDDEN, &u.0);
    }
    let rum = &state.cfg.apm_server.rum;
    if !(rum.enabled && rum.source_mapping.enabled) {
        return response::error(req, StatusCode::FORBIDDEN, MSG_DISABLED);
    }
    if req.method() != Method::POST {
        return response::error(req, StatusCode::METHOD_NOT_ALLOWED, MSG_METHOD);
    }
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let bad_ct = || {
        response::error(
            req,
            StatusCode::BAD_REQUEST,
            &format!("data decoding error: invalid content type: {ct}"),
        )
    };
    if !ct.contains("multipart/form-data") {
        return bad_ct();
    }
    let Ok(boundary) = multer::parse_boundary(&ct) else {
        return bad_ct();
    };
    let max_map = rum.source_mapping.max_sourcemap_size.get();
    let too_large = |limit: u64| {
        response::error(
            req,
            StatusCode::BAD_REQUEST,
            &format!("data validation error: sourcemap size exceeds limit : source map exceeds limit of {limit} bytes"),
        )
    };
    let read = tokio::time::timeout(
        state.cfg.apm_server.read_timeout.get(),
        read_body(payload, max_map.saturating_add(FORM_OVERHEAD)),
    )
    .await;
    let body = match read {
        Err(_) => return response::error(req, StatusCode::REQUEST_TIMEOUT, msg::TIMED_OUT),
        Ok(Err(FormError::TooLarge(_))) => return too_large(max_map),
        Ok(Err(FormError::Decode(e))) => {
            return response::error(
                req,
                StatusCode::BAD_REQUEST,
                &format!("data decoding error: {e}"),
            )
        }
        Ok(Ok(b)) => b,
    };
    let form = match parse_form(body, boundary, max_map).await {
        Ok(f) => f,
        Err(FormError::TooLarge(l)) => return too_large(l),
        Err(FormError::Decode(e)) => {
            return response::error(
                req,
                StatusCode::BAD_REQUEST,
                &format!("data decoding error: {e}"),
            )
        }
    };
    if form.service_name.is_empty()
        || form.service_version.is_empty()
        || form.bundle_filepath.is_empty()
    {
        return response::error(req, StatusCode::BAD_REQUEST, MSG_MISSING_FIELDS);
    }
    let Some(map) = form.sourcemap else {
        return response::error(req, StatusCode::BAD_REQUEST, MSG_MISSING_FILE);
    };
    let Some(store) = &state.sourcemaps else {
        tracing::error!("source-map store unavailable");
        return response::error(
            req,
            StatusCode::SERVICE_UNAVAILABLE,
            msg::SERVICE_UNAVAILABLE,
        );
    };
    match store
        .upload(
            &form.service_name,
            &form.service_version,
            &form.bundle_filepath,
            map.to_vec(),
        )
        .await
    {
        Ok(()) => {
            tracing::info!(
                service.name = %form.service_name,
                service.version = %form.service_version,
                bundle_filepath = %form.bundle_filepath,
                "source map uploaded"
            );
            response::builder(StatusCode::ACCEPTED).finish()
        }
        Err(UploadError::Invalid(e)) => response::error(
            req,
            StatusCode::BAD_REQUEST,
            &format!("data validation error: error validating sourcemap: {e}"),
        ),
        Err(e @ UploadError::Store(_)) => {
            tracing::warn!(error = %e, "source map upload failed");
            response::error(req, StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
        }
    }
}
