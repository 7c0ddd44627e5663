//! The intake handler (`/intake/v2/events`, `/intake/v2/rum/events`,
//! `/intake/v3/rum/events`): checks the request method and content type,
//! streams the body through [`BodyDecoder`], hands batches of up to ten
//! lines to the pipeline and answers with the intake result (accepted count
//! and per-line errors; see docs/intake.md).
//!
//! Invariants: the body is read as it arrives; every byte the handler holds
//! (lines waiting for their batch, the metadata line, the decoder's partial
//! line and decompressor state, plus room for the next decoded slice) is
//! charged to the memory budget before it is held, so stalled streams cannot
//! hold memory outside it; one batch per request is in the pipeline at a
//! time; the handler never blocks its executor thread (only `try_send` and
//! async sleeps); waiting for room ends after `queue_wait` with a 503 that
//! reports what was accepted so far.

use super::body::{BodyDecoder, Encoding, LineItem, FEED_OUTPUT};
use super::error::{msg, IntakeError};
use super::response;
use super::AppState;
use crate::budget::Permit;
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

/// Checks done before the body is touched: POST, and an ndjson content type when one is given.
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
    /// Whether the metadata line was read.
    metadata_seen: bool,
    /// The metadata line until the first batch takes it.
    metadata: Option<Bytes>,
    pending: Vec<RawLine>,
    pending_count: usize,
    pending_bytes: usize,
    /// The budget share covering what this request holds (see the module doc).
    held: Permit,
    /// Time this request has spent queued so far: waiting for room, and
    /// waiting for outcomes beyond [`BATCH_ALLOWANCE`]. A request gets
    /// `queue_wait` of it in total, not per batch.
    waited: Duration,
}

impl IntakeRun {
    pub fn new(state: Arc<AppState>, ctx: RequestCtx) -> Self {
        IntakeRun {
            held: state.budget.share(),
            state,
            ctx: Arc::new(ctx),
            result: IntakeResult::default(),
            metadata_seen: false,
            metadata: None,
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
                    tracing::debug!(error = %e, "intake body read failed");
                    self.read_failed(read_error_text(&e).into()).await;
                    return Ok(());
                }
            };
            let mut rest: &[u8] = &chunk;
            while !rest.is_empty() {
                if let Next::Stop = self.reserve(body, chunk.len() + FEED_OUTPUT).await {
                    return Ok(());
                }
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
                self.held.shrink_to(self.holding(body));
            }
        }
        if let Next::Stop = self.reserve(body, FEED_OUTPUT).await {
            return Ok(());
        }
        if let Err(e) = body.finish() {
            self.body_failed(body, e).await;
            return Ok(());
        }
        if let Next::Stop = self.take_lines(body).await {
            return Ok(());
        }
        if !self.pending.is_empty() || self.metadata.is_some() {
            self.flush().await;
        }
        Ok(())
    }

    /// Bytes this request holds outside the pipeline.
    fn holding(&self, body: &BodyDecoder) -> usize {
        self.pending_bytes + self.metadata.as_ref().map_or(0, |m| m.len()) + body.held()
    }

    /// Grows the budget share to cover what is held plus `extra` bytes about
    /// to be held. Under pressure the lines already charged go to the
    /// pipeline first; after the request's `queue_wait` the request ends
    /// with a 503 (the lines still waiting are rejected as queue-full).
    async fn reserve(&mut self, body: &BodyDecoder, extra: usize) -> Next {
        let wait = self.state.cfg.pipeline.queue_wait.get();
        let mut backoff = Duration::from_millis(1);
        let mut flushed = false;
        loop {
            let need = self.holding(body) + extra;
            if need <= self.held.bytes() || self.held.try_grow(need - self.held.bytes()) {
                return Next::Continue;
            }
            if !flushed && (!self.pending.is_empty() || self.metadata.is_some()) {
                flushed = true;
                if let Next::Stop = self.flush().await {
                    return Next::Stop;
                }
                continue;
            }
            if self.waited >= wait {
                let n = self.pending_count;
                let telemetry = &self.state.telemetry;
                telemetry.events_received.inc_by(n as u64);
                telemetry.reject(reject::QUEUE_FULL, n);
                self.result.terminal = Some(IntakeError::QueueFull);
                return Next::Stop;
            }
            let slept = Instant::now();
            tokio::time::sleep(backoff.min(wait.saturating_sub(self.waited))).await;
            self.waited += slept.elapsed();
            backoff = (backoff * 2).min(Duration::from_millis(16));
        }
    }

    /// Sends one batch of already-read lines without a metadata line (an
    /// OTLP message) through the same room/queue/outcome waiting as a stream.
    /// Its `bytes` are charged to the memory budget first, waiting up to
    /// `queue_wait` for room (then 503 "queue is full").
    pub async fn submit(mut self, lines: Vec<RawLine>, bytes: usize) -> IntakeResult {
        self.metadata_seen = true;
        self.pending_count = lines.len();
        self.pending = lines;
        self.pending_bytes = bytes;
        let wait = self.state.cfg.pipeline.queue_wait.get();
        let mut backoff = Duration::from_millis(1);
        while !self.held.try_grow(bytes.saturating_sub(self.held.bytes())) {
            if self.waited >= wait {
                let n = self.pending_count;
                let telemetry = &self.state.telemetry;
                telemetry.events_received.inc_by(n as u64);
                telemetry.reject(reject::QUEUE_FULL, n);
                self.result.terminal = Some(IntakeError::QueueFull);
                return self.result;
            }
            let slept = Instant::now();
            tokio::time::sleep(backoff.min(wait.saturating_sub(self.waited))).await;
            self.waited += slept.elapsed();
            backoff = (backoff * 2).min(Duration::from_millis(16));
        }
        self.flush().await;
        self.result
    }

    /// Lines decoded before the failure are processed first (they count).
    async fn body_failed(&mut self, body: &mut BodyDecoder, e: super::body::BodyError) {
        if let Next::Stop = self.take_lines(body).await {
            return;
        }
        if let super::body::BodyError::RatioExceeded { .. } = e {
            // A client error (400), not a read failure.
            if self.metadata_seen {
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
        if !self.metadata_seen {
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
            if !self.metadata_seen {
                match item {
                    LineItem::Line {
                        bytes,
                        terminated: true,
                    } => {
                        self.metadata_seen = true;
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
        let metadata_line = self.metadata.take();
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

        // The lines were charged to the budget as they were read; their
        // share travels with the batch.
        let permit = self.held.split(bytes + meta_len);

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

/// The answer's text for a failed body read (Go's wording; the library's
/// own text, which names its internals, goes to the log only).
fn read_error_text(e: &actix_web::error::PayloadError) -> &'static str {
    use actix_web::error::PayloadError;
    match e {
        PayloadError::Incomplete(_) => "unexpected EOF",
        PayloadError::Overflow => "http: request body too large",
        PayloadError::EncodingCorrupted => "corrupt body encoding",
        _ => "error reading request body",
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
