//! The intake handler (`/intake/v2/events`, `/intake/v2/rum/events`,
//! `/intake/v3/rum/events`): checks the request (intake.md §5.1), streams
//! the body through [`BodyDecoder`], hands batches of up to ten lines to the
//! pipeline and answers with the intake result (§6).
//!
//! Invariants: the body is read as it arrives; one batch per request is in
//! the pipeline at a time; the handler never blocks its executor thread
//! (only `try_send` and async sleeps); waiting for room ends after
//! `queue_wait` with a 503 that reports what was accepted so far.

use super::body::{BodyDecoder, Encoding, LineItem};
use super::error::{msg, IntakeError};
use super::response;
use super::AppState;
use crate::pipeline::topology::EnqueueError;
use crate::pipeline::{ticket, Batch, LineErr, RawLine, RequestCtx};
use crate::telemetry::reject;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Lines per batch (apm-data's stream processor reads ten lines at a time).
pub const BATCH_LINES: usize = 10;
/// Per-line errors listed in a response; later ones are only counted.
pub const MAX_LISTED_ERRORS: usize = 5;
/// Time a batch may take through the pipeline without counting as queued
/// (normal processing; an anonymous batch may also wait up to the rate
/// limiter's one-second budget for tokens).
pub const BATCH_ALLOWANCE: Duration = Duration::from_millis(50);

#[derive(Serialize)]
struct ErrorEntry {
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    document: String,
}

#[derive(Serialize)]
struct IntakeBody {
    accepted: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ErrorEntry>,
}

/// The running result of one intake request.
#[derive(Default)]
pub struct IntakeResult {
    pub accepted: usize,
    pub errors: Vec<LineErr>,
    pub more_errors: usize,
    pub terminal: Option<IntakeError>,
}

impl IntakeResult {
    fn add_errors(&mut self, errs: Vec<LineErr>) {
        for e in errs {
            if self.errors.len() < MAX_LISTED_ERRORS {
                self.errors.push(e);
            } else {
                self.more_errors += 1;
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        let mut s = StatusCode::ACCEPTED;
        if !self.errors.is_empty() {
            s = StatusCode::BAD_REQUEST;
        }
        if let Some(t) = &self.terminal {
            s = s.max(t.status());
        }
        s
    }

    /// The HTTP response (body when failing or `?verbose`; `Connection: close` on failure).
    pub fn respond(self, req: &HttpRequest) -> HttpResponse {
        let status = self.status();
        let verbose = req
            .query_string()
            .split('&')
            .any(|kv| kv.split('=').next() == Some("verbose"));
        if status == StatusCode::ACCEPTED && !verbose {
            return response::builder(status).finish();
        }
        let mut errors: Vec<ErrorEntry> = self
            .errors
            .into_iter()
            .map(|e| ErrorEntry {
                message: e.error.to_string(),
                document: String::from_utf8_lossy(&e.document).into_owned(),
            })
            .collect();
        if let Some(t) = &self.terminal {
            errors.push(ErrorEntry {
                message: t.to_string(),
                document: t
                    .document()
                    .map(|d| String::from_utf8_lossy(d).into_owned())
                    .unwrap_or_default(),
            });
        }
        let mut resp = response::json(
            req,
            status,
            &IntakeBody {
                accepted: self.accepted,
                errors,
            },
        );
        if status.as_u16() >= 400 {
            resp.head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        resp
    }
}

/// Checks of §5.1 done before the body is touched.
pub fn precheck(req: &HttpRequest) -> Result<(), IntakeError> {
    if req.method() != Method::POST {
        return Err(IntakeError::Method);
    }
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = String::from_utf8_lossy(ct.as_bytes());
        if !ct.contains("application/x-ndjson") && !ct.contains("application/ndjson") {
            return Err(IntakeError::ContentType(ct.into_owned()));
        }
    }
    Ok(())
}

enum Next {
    Continue,
    Stop,
}

/// Streams one intake request through the pipeline.
pub struct IntakeRun {
    state: Arc<AppState>,
    ctx: Arc<RequestCtx>,
    result: IntakeResult,
    metadata: Option<Bytes>,
    metadata_sent: bool,
    pending: Vec<RawLine>,
    pending_count: usize,
    pending_bytes: usize,
    /// Time this request has spent queued so far: waiting for room, and
    /// waiting for outcomes beyond [`BATCH_ALLOWANCE`]. A request gets
    /// `queue_wait` of it in total, not per batch.
    waited: Duration,
}

impl IntakeRun {
    pub fn new(state: Arc<AppState>, ctx: RequestCtx) -> Self {
        IntakeRun {
            state,
            ctx: Arc::new(ctx),
            result: IntakeResult::default(),
            metadata: None,
            metadata_sent: false,
            pending: Vec::with_capacity(BATCH_LINES),
            pending_count: 0,
            pending_bytes: 0,
            waited: Duration::ZERO,
        }
    }

    /// Reads the whole body (until `deadline`) and returns the result.
    pub async fn run(
        mut self,
        req: &HttpRequest,
        payload: web::Payload,
        deadline: Instant,
    ) -> Result<IntakeResult, TimedOut> {
        let enc = Encoding::from_header(
            req.headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok()),
        );
        let a = &self.state.cfg.apm_server;
        let mut body =
            BodyDecoder::new(enc, a.max_event_size).with_ratio_limit(a.max_decompression_ratio);
        let result = self.read_body(&mut body, payload, deadline).await;
        let m = &self.state.http_metrics;
        m.body_bytes.inc_by(body.wire);
        m.decoded_bytes.inc_by(body.decoded());
        result.map(|()| self.result)
    }

    async fn read_body(
        &mut self,
        body: &mut BodyDecoder,
        mut payload: web::Payload,
        deadline: Instant,
    ) -> Result<(), TimedOut> {
        loop {
            let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
                Err(_) => return Err(TimedOut),
                Ok(None) => break,
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    self.read_failed(e.to_string()).await;
                    return Ok(());
                }
            };
            let mut rest: &[u8] = &chunk;
            while !rest.is_empty() {
                match body.feed(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) => {
                        self.body_failed(body, e).await;
                        return Ok(());
                    }
                }
                if let Next::Stop = self.take_lines(body).await {
                    return Ok(());
                }
            }
        }
        if let Err(e) = body.finish() {
            self.body_failed(body, e).await;
            return Ok(());
        }
        if let Next::Stop = self.take_lines(body).await {
            return Ok(());
        }
        if !self.pending.is_empty() || (self.metadata.is_some() && !self.metadata_sent) {
            self.flush().await;
        }
        Ok(())
    }

    /// Lines decoded before the failure are processed first (they count).
    async fn body_failed(&mut self, body: &mut BodyDecoder, e: super::body::BodyError) {
        if let Next::Stop = self.take_lines(body).await {
            return;
        }
        if let super::body::BodyError::RatioExceeded { .. } = e {
            // A client error (400), not a read failure.
            if self.metadata.is_some() {
                if let Next::Stop = self.flush().await {
                    return;
                }
            }
            self.result.terminal = Some(IntakeError::Decompress(e));
            return;
        }
        if !body.started {
            self.result.terminal = Some(IntakeError::Decompress(e));
        } else {
            self.read_failed(e.to_string()).await;
        }
    }

    async fn read_failed(&mut self, text: String) {
        if self.metadata.is_none() {
            self.result.terminal = Some(IntakeError::ReadMetadata(text));
            return;
        }
        // Events read before the failure are still processed and counted.
        if let Next::Continue = self.flush().await {
            self.result.terminal = Some(IntakeError::Read(text));
        }
    }

    async fn take_lines(&mut self, body: &mut BodyDecoder) -> Next {
        while let Some(item) = body.next_line() {
            if self.metadata.is_none() {
                match item {
                    LineItem::Line {
                        bytes,
                        terminated: true,
                    } => {
                        self.metadata = Some(bytes);
                        continue;
                    }
                    LineItem::Line {
                        bytes,
                        terminated: false,
                    } => {
                        self.result.terminal = Some(IntakeError::Metadata {
                            message: "EOF while reading metadata".into(),
                            document: Some(bytes),
                        });
                    }
                    LineItem::TooLarge(bytes) => {
                        self.result.terminal = Some(IntakeError::Metadata {
                            message: crate::model::LineError::TooLarge.to_string(),
                            document: Some(bytes),
                        });
                    }
                    LineItem::Empty => {
                        self.result.terminal = Some(IntakeError::Metadata {
                            message: crate::model::LineError::MetadataRequired.to_string(),
                            document: None,
                        });
                    }
                }
                return Next::Stop;
            }
            self.pending_count += 1;
            match item {
                LineItem::Line { bytes, .. } => {
                    self.pending_bytes += bytes.len();
                    self.pending.push(RawLine::Json(bytes));
                }
                LineItem::TooLarge(bytes) => {
                    self.pending_bytes += bytes.len();
                    self.pending.push(RawLine::TooLarge(bytes));
                }
                LineItem::Empty => {}
            }
            if self.pending_count >= BATCH_LINES {
                if let Next::Stop = self.flush().await {
                    return Next::Stop;
                }
            }
        }
        Next::Continue
    }

    /// Sends the pending lines as one batch and waits for its outcome.
    async fn flush(&mut self) -> Next {
        let lines = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_LINES));
        let bytes = self.pending_bytes;
        self.pending_count = 0;
        self.pending_bytes = 0;
        let metadata_line = if self.metadata_sent {
            None
        } else {
            self.metadata_sent = true;
            self.metadata.clone()
        };
        if lines.is_empty() && metadata_line.is_none() {
            return Next::Continue;
        }
        let n_lines = lines.len();
        let meta_len = metadata_line.as_ref().map_or(0, |m| m.len());
        let st = Arc::clone(&self.state);
        let wait = st.cfg.pipeline.queue_wait.get();
        let room_start = Instant::now();
        let give_up = room_start + wait.saturating_sub(self.waited);
        let telemetry = &st.telemetry;

        // Room in the memory budget.
        let mut backoff = Duration::from_millis(1);
        let permit = loop {
            if let Some(p) = st.budget.try_acquire(bytes + meta_len) {
                break p;
            }
            if Instant::now() >= give_up {
                telemetry.events_received.inc_by(n_lines as u64);
                telemetry.reject(reject::QUEUE_FULL, n_lines);
                self.result.terminal = Some(IntakeError::QueueFull);
                return Next::Stop;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(16));
        };

        let (tk, watch) = ticket();
        let mut batch = Batch {
            req: Arc::clone(&self.ctx),
            metadata_line,
            lines,
            ticket: tk,
            permit,
        };
        let mut backoff = Duration::from_millis(1);
        loop {
            match st.intake.try_send(batch) {
                Ok(()) => break,
                Err(EnqueueError::Closed(_)) => {
                    telemetry.events_received.inc_by(n_lines as u64);
                    telemetry.reject(reject::SHUTTING_DOWN, n_lines);
                    self.result.terminal = Some(IntakeError::ShuttingDown);
                    return Next::Stop;
                }
                Err(EnqueueError::Full(b)) => {
                    if Instant::now() >= give_up {
                        telemetry.events_received.inc_by(n_lines as u64);
                        telemetry.reject(reject::QUEUE_FULL, n_lines);
                        self.result.terminal = Some(IntakeError::QueueFull);
                        return Next::Stop;
                    }
                    batch = b;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(16));
                }
            }
        }

        self.waited += room_start.elapsed();

        // The outcome: decided by the pipeline, or given up on once the
        // request's queueing budget is spent.
        let allowance = if self.ctx.rate_key.is_some() {
            BATCH_ALLOWANCE + crate::ratelimit::BATCH_MAX_WAIT
        } else {
            BATCH_ALLOWANCE
        };
        let outcome_start = Instant::now();
        let mut watch = watch;
        let budget = wait.saturating_sub(self.waited) + allowance;
        let outcome = match tokio::time::timeout(budget, &mut watch.reply).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(_)) => Err(IntakeError::Internal(msg::PANIC.into())),
            Err(_) => {
                if watch.cancel() {
                    Err(IntakeError::QueueFull)
                } else {
                    // Committed just now: the answer is on its way.
                    match (&mut watch.reply).await {
                        Ok(o) => Ok(o),
                        Err(_) => Err(IntakeError::Internal(msg::PANIC.into())),
                    }
                }
            }
        };
        self.waited += outcome_start.elapsed().saturating_sub(allowance);
        match outcome {
            Ok(o) => {
                self.result.accepted += o.accepted;
                self.result.add_errors(o.errors);
                if let Some(t) = o.terminal {
                    self.result.terminal = Some(t.into());
                    return Next::Stop;
                }
                Next::Continue
            }
            Err(e) => {
                self.result.terminal = Some(e);
                Next::Stop
            }
        }
    }
}

/// The request's read deadline passed (→ 503 `request timed out`).
pub struct TimedOut;

/// The 503 answer when the read deadline passed.
pub fn timed_out(req: &HttpRequest) -> HttpResponse {
    let mut r = response::error(req, StatusCode::SERVICE_UNAVAILABLE, msg::TIMED_OUT);
    r.head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    r
}
