//! The legacy apm-server 7.x source-map upload API,
//! `POST /assets/v1/sourcemaps`, kept on purpose although apm-server 8+
//! removed it (8.x and 9.x upload maps through Kibana).
//!
//! Checks, in order: authentication (401 without or with bad credentials;
//! with no auth configured at all, 403 unless
//! `apm-server.sourcemap.allow_anonymous_upload` is set), authorization
//! (`sourcemap:write` for API keys; anonymous is always 403), the kill
//! switch (403 unless RUM and source mapping are enabled), method (405
//! unless POST), content type (400 unless `multipart/form-data`), a free
//! upload slot (503 beyond `apm-server.sourcemap.max_concurrent_uploads`),
//! then the form: `service_name`, `service_version`, `bundle_filepath` and
//! the `sourcemap` file. The map is validated, written to `.apm-source-map`
//! in Kibana's format, and the answer is `202` with an empty body. See
//! docs/security.md.
//!
//! Invariants: the body is parsed as it arrives, never buffered whole;
//! every byte read is charged to the memory budget before it is held (503
//! when the budget has no room within `queue_wait`), and the map is
//! gathered into one allocation of its exact size; the body is bounded by
//! `max_sourcemap_size` plus a small allowance for the form's other parts
//! and read within `read_timeout`; answers carry fixed texts, details go to
//! the log; client input never panics the handler.

use super::error::msg;
use super::{authenticate, guarded, response, AppState};
use crate::auth::{Action, Method as AuthMethod, Resource};
use crate::budget::Permit;
use crate::sourcemap::store::UploadError;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Bytes allowed on top of `max_sourcemap_size` for the text fields and
/// multipart framing.
const FORM_OVERHEAD: u64 = 64 * 1024;
/// Most bytes of one text field.
const MAX_TEXT_FIELD: u64 = 16 * 1024;

pub const MSG_DISABLED: &str = "forbidden request: source map uploads are disabled. Enable `apm-server.rum.enabled` and `apm-server.rum.source_mapping.enabled` to upload source maps.";
pub const MSG_NO_AUTH: &str = "forbidden request: source map uploads need authentication. Configure `apm-server.auth.secret_token` or `apm-server.auth.api_key`, or set `apm-server.sourcemap.allow_anonymous_upload` to accept uploads from anyone.";
pub const MSG_MISSING_FIELDS: &str = "data validation error: error validating sourcemap: bundle_filepath, service_name and service_version must be sent";
pub const MSG_MISSING_FILE: &str =
    "data validation error: error validating sourcemap: sourcemap must be sent";
pub const MSG_METHOD: &str = "method not supported: only POST is allowed";
pub const MSG_BAD_FORM: &str = "data decoding error: invalid multipart form";
pub const MSG_READ: &str = "data decoding error: cannot read request body";
pub const MSG_STORE: &str = "service unavailable: cannot store the source map";

/// The upload form.
#[derive(Default)]
struct Form {
    service_name: String,
    service_version: String,
    bundle_filepath: String,
    sourcemap: Option<Vec<u8>>,
}

#[derive(Debug)]
enum FormError {
    TooLarge,
    /// Not a readable multipart form (detail for the log).
    Decode(String),
    /// The connection failed while the body was read (detail for the log).
    Read(String),
    /// No room in the memory budget within `queue_wait`.
    Budget,
}

/// Grows `permit` by `bytes`, waiting up to `wait` for room.
async fn charge(permit: &mut Permit, bytes: usize, wait: Duration) -> Result<(), FormError> {
    let give_up = tokio::time::Instant::now() + wait;
    let mut backoff = Duration::from_millis(1);
    while !permit.try_grow(bytes) {
        if tokio::time::Instant::now() >= give_up {
            return Err(FormError::Budget);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(16));
    }
    Ok(())
}

/// Reads the body into `tx` chunk by chunk, charging each to `permit`
/// first. The payload is not `Send`, so it stays here and multer reads the
/// channel.
async fn pump(
    mut payload: web::Payload,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    permit: &mut Permit,
    limit: u64,
    wait: Duration,
) -> Result<(), FormError> {
    let mut read = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| FormError::Read(e.to_string()))?;
        read += chunk.len() as u64;
        if read > limit {
            return Err(FormError::TooLarge);
        }
        charge(permit, chunk.len(), wait).await?;
        if tx.send(Ok(chunk)).await.is_err() {
            // the parser stopped (its error is the answer)
            return Ok(());
        }
    }
    Ok(())
}

async fn parse_form(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    boundary: String,
    max_map: u64,
) -> Result<(Form, usize), FormError> {
    let stream = channel_stream(rx);
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .for_field("sourcemap", max_map)
            .per_field(MAX_TEXT_FIELD),
    );
    let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
    let mut form = Form::default();
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(form_error(e)),
        };
        let name = field.name().unwrap_or("").to_string();
        // the chunks share the body's buffers; gathered once below
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        loop {
            match field.chunk().await {
                Ok(Some(c)) => {
                    len += c.len();
                    chunks.push(c);
                }
                Ok(None) => break,
                Err(e) => return Err(form_error(e)),
            }
        }
        let mut data = Vec::with_capacity(len);
        for c in chunks {
            data.extend_from_slice(&c);
        }
        let text = || String::from_utf8_lossy(&data).trim().to_string();
        match name.as_str() {
            "service_name" => form.service_name = text(),
            "service_version" => form.service_version = text(),
            "bundle_filepath" => form.bundle_filepath = text(),
            "sourcemap" => form.sourcemap = Some(data),
            _ => {}
        }
    }
    let len = form.sourcemap.as_ref().map_or(0, Vec::len);
    Ok((form, len))
}

fn channel_stream<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

fn form_error(e: multer::Error) -> FormError {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() == Some("sourcemap") =>
        {
            FormError::TooLarge
        }
        e => FormError::Decode(e.to_string()),
    }
}

/// Reads the form: the body streams through a two-chunk channel into the
/// multipart parser; every chunk is charged to `permit` first.
async fn read_form(
    payload: web::Payload,
    boundary: String,
    permit: &mut Permit,
    max_map: u64,
    wait: Duration,
) -> Result<Form, FormError> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let limit = max_map.saturating_add(FORM_OVERHEAD);
    let (pumped, parsed) = futures_util::future::join(
        pump(payload, tx, permit, limit, wait),
        parse_form(rx, boundary, max_map),
    )
    .await;
    // a read failure or limit explains a parse failure (the stream ended early)
    pumped?;
    let (form, map_len) = parsed?;
    // the map's own allocation, held until it is stored
    charge(permit, map_len, wait).await?;
    Ok(form)
}

/// Warns at start-up when uploads are open to anyone.
pub fn warn_if_anonymous(cfg: &crate::config::Config) {
    if cfg.apm_server.sourcemap.allow_anonymous_upload {
        tracing::warn!(
            "apm-server.sourcemap.allow_anonymous_upload is set: without auth configured, anyone who reaches this server can upload or overwrite source maps"
        );
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
    if auth.method == AuthMethod::None && !state.cfg.apm_server.sourcemap.allow_anonymous_upload {
        return response::error(req, StatusCode::FORBIDDEN, MSG_NO_AUTH);
    }
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
    let Ok(_slot) = state.uploads.try_acquire() else {
        tracing::warn!("source map upload refused: too many uploads at once");
        return response::error(
            req,
            StatusCode::SERVICE_UNAVAILABLE,
            msg::SERVICE_UNAVAILABLE,
        );
    };
    let mut permit = state.budget.share();
    let read = tokio::time::timeout(
        state.cfg.apm_server.read_timeout.get(),
        read_form(
            payload,
            boundary,
            &mut permit,
            max_map,
            state.cfg.pipeline.queue_wait.get(),
        ),
    )
    .await;
    let form = match read {
        Err(_) => return response::error(req, StatusCode::REQUEST_TIMEOUT, msg::TIMED_OUT),
        Ok(Err(FormError::TooLarge)) => return too_large(max_map),
        Ok(Err(FormError::Budget)) => {
            tracing::warn!("source map upload refused: memory budget full");
            return response::error(
                req,
                StatusCode::SERVICE_UNAVAILABLE,
                msg::SERVICE_UNAVAILABLE,
            );
        }
        Ok(Err(FormError::Decode(e))) => {
            tracing::info!(error = %e, "source map upload: invalid form");
            return response::error(req, StatusCode::BAD_REQUEST, MSG_BAD_FORM);
        }
        Ok(Err(FormError::Read(e))) => {
            tracing::info!(error = %e, "source map upload: body read failed");
            return response::error(req, StatusCode::BAD_REQUEST, MSG_READ);
        }
        Ok(Ok(f)) => f,
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
            map,
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
            response::error(req, StatusCode::SERVICE_UNAVAILABLE, MSG_STORE)
        }
    }
}
