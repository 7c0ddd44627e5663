//! Elasticsearch output: documents are gzip-compressed into a bulk buffer as
//! they arrive, flushed by size or interval as `_bulk` `create` requests into
//! data streams, and followed until every document is indexed or counted as
//! failed.
//!
//! Shape (Vector style): [`config`] resolves the settings (the client part
//! through [`crate::es::Settings`]); [`request_builder`] is the on-the-fly
//! gzip bulk buffer; [`service`] holds the request slots and the HTTP call
//! on the one [`crate::es::Client`] (round-robin hosts, a failed host
//! skipped for a while); [`retry`] owns every retry decision (whole request,
//! per item, budget, back-off) while this file keeps the loop; [`response`]
//! per-item outcomes; [`metrics`] the output's counters.
//!
//! The bulk body is sent as ready bytes with our own `Content-Encoding:
//! gzip`: it is compressed while the buffer fills and the same compressed
//! bytes are resent on a retry (see `src/es/mod.rs` for why the client is
//! not the `elasticsearch` crate's transport).
//!
//! Threads: each indexer instance (a plain OS thread) owns one
//! [`EsOutputInstance`]. A flush takes one of the `max_requests` slots shared
//! by all instances (blocking the indexer while none is free: that is the
//! back-pressure) and hands the bulk to a task on the output's own small tokio
//! runtime, which sends it, resends what must be resent, counts outcomes and
//! releases the slot and the documents' acks.
//!
//! Invariants:
//! * each document ends in exactly one of `events_indexed`,
//!   `events_failed{rejected_by_output|retries_exhausted|shutdown|io|panic}`;
//!   its ack is dropped only after it was counted;
//! * retries are decided by [`retry`] only; per-item statuses other than
//!   429/5xx fail at once, logged grouped by (index, error type); an
//!   unreadable bulk answer counts as a transport failure;
//! * start-up never waits for Elasticsearch; [`OutputFactory::ready`] reports
//!   a background reachability check.

pub mod config;
pub mod metrics;
pub mod request_builder;
pub mod response;
pub mod retry;
pub mod service;
#[cfg(test)]
mod tests;

pub use config::{EsSettings, SettingsError};

use super::{Ack, CloseReport, Output, OutputError, OutputFactory};
use crate::config::Config;
use crate::telemetry::{fail, Telemetry};
use metrics::{outcome, EsMetrics};
use parking_lot::Mutex;
use request_builder::{BulkBody, BulkBuffer};
use response::{Outcome, Rejections};
use retry::{RequestDecision, RetryPolicy};
use service::{Service, SlotGuard, Slots};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Builds the Elasticsearch output factory from `output.elasticsearch`.
pub fn factory(cfg: &Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    let es = cfg
        .output
        .elasticsearch
        .as_ref()
        .ok_or_else(|| OutputError::Config("output.elasticsearch is not configured".into()))?;
    let mut settings =
        EsSettings::from_config(es).map_err(|e| OutputError::Config(e.to_string()))?;
    if cfg.queue.kind == crate::config::QueueType::Disk {
        // The disk queue holds what cannot be delivered yet: a failing bulk
        // is retried until Elasticsearch answers, back-pressure does the rest;
        // replays after a restart must answer 409, not duplicate.
        settings.retry_budget = Duration::MAX;
        settings.idempotent_ids = true;
    }
    Ok(Arc::new(ElasticsearchFactory::new(settings)?))
}

/// Owns the output's tokio runtime; shuts it down without blocking when dropped.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Shared {
    service: Service,
    slots: Arc<Slots>,
    ready: AtomicBool,
    /// The shutdown deadline once [`ElasticsearchFactory::begin_shutdown`] was called.
    shutdown: watch::Sender<Option<Instant>>,
}

/// The factory: shared client, hosts, request slots and runtime.
pub struct ElasticsearchFactory {
    shared: Arc<Shared>,
    rt: Arc<Runtime>,
    handle: tokio::runtime::Handle,
    /// Metrics per telemetry registry (one server normally; several in tests).
    metrics: Mutex<Vec<(Weak<Telemetry>, EsMetrics)>>,
}

impl ElasticsearchFactory {
    /// Builds the client and starts the background reachability check; does not contact Elasticsearch.
    pub fn new(settings: EsSettings) -> Result<Self, OutputError> {
        let client = settings
            .client()
            .map_err(|e| OutputError::Config(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("apm-rs-es-output")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let shared = Arc::new(Shared {
            slots: Slots::new(settings.max_requests),
            service: Service::new(settings, client),
            ready: AtomicBool::new(false),
            shutdown: watch::channel(None).0,
        });
        handle.spawn(ready_loop(Arc::downgrade(&shared)));
        Ok(ElasticsearchFactory {
            shared,
            rt: Arc::new(Runtime(Some(rt))),
            handle,
            metrics: Mutex::new(Vec::new()),
        })
    }

    pub fn settings(&self) -> &EsSettings {
        &self.shared.service.settings
    }

    /// Free bulk request slots right now (tests, diagnostics).
    pub fn free_slots(&self) -> usize {
        self.shared.slots.free()
    }

    /// Announces the shutdown deadline to every instance at once, before
    /// their `close`: an indexer blocked in `append` waiting for a slot (all
    /// slots held by bulks being retried) gives up at `deadline` and counts its
    /// bulk as failed (`shutdown`), and bulks still retrying at `deadline` are
    /// abandoned the same way. Until `deadline` everything drains normally.
    pub fn begin_shutdown(&self, deadline: Instant) {
        self.shared.shutdown.send_if_modified(|d| {
            let new = Some(d.map_or(deadline, |old| old.min(deadline)));
            let changed = *d != new;
            *d = new;
            changed
        });
        self.shared.slots.set_shutdown(deadline);
    }

    fn metrics_for(&self, telemetry: &Arc<Telemetry>) -> EsMetrics {
        let mut all = self.metrics.lock();
        all.retain(|(w, _)| w.strong_count() > 0);
        if let Some((_, m)) = all
            .iter()
            .find(|(w, _)| w.upgrade().is_some_and(|t| t.same_server(telemetry)))
        {
            return m.clone();
        }
        let m = EsMetrics::new(&telemetry.registry);
        all.push((Arc::downgrade(telemetry), m.clone()));
        m
    }
}

async fn ready_loop(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let ok = s.service.reachable().await;
        let was = s.ready.swap(ok, Ordering::Relaxed);
        if ok != was {
            if ok {
                tracing::info!("elasticsearch is reachable");
            } else {
                tracing::warn!("elasticsearch is not reachable");
            }
        }
        let every = s.service.settings.ready_check_interval;
        let wait = if ok {
            every
        } else {
            every.min(Duration::from_secs(1))
        };
        drop(s);
        tokio::time::sleep(wait).await;
    }
}

impl OutputFactory for ElasticsearchFactory {
    fn build(
        &self,
        instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Box<dyn Output>, OutputError> {
        let metrics = self.metrics_for(&telemetry);
        let s = &self.shared.service.settings;
        let (done_tx, done_rx) = mpsc::channel();
        let (cancel, _) = watch::channel(false);
        Ok(Box::new(EsOutputInstance {
            buffer: BulkBuffer::new(
                s.compression_level,
                s.flush_bytes.min(64 << 20),
                s.idempotent_ids,
            ),
            shared: Arc::clone(&self.shared),
            _rt: Arc::clone(&self.rt),
            handle: self.handle.clone(),
            telemetry,
            metrics,
            done_tx,
            done_rx,
            inflight: 0,
            cancel,
            closed: false,
            instance,
            undelivered: 0,
        }))
    }

    fn flush_interval(&self) -> Duration {
        (self.settings().flush_interval / 2).max(Duration::from_millis(5))
    }

    fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    fn shutdown(&self, deadline: Instant) {
        self.begin_shutdown(deadline);
    }
}

/// One indexer instance's view of the output.
pub struct EsOutputInstance {
    buffer: BulkBuffer,
    shared: Arc<Shared>,
    _rt: Arc<Runtime>,
    handle: tokio::runtime::Handle,
    telemetry: Arc<Telemetry>,
    metrics: EsMetrics,
    /// Each bulk task reports, when done, how many documents it abandoned at shutdown.
    done_tx: mpsc::Sender<u64>,
    done_rx: mpsc::Receiver<u64>,
    inflight: usize,
    cancel: watch::Sender<bool>,
    closed: bool,
    instance: usize,
    /// Documents of this instance failed for `shutdown` so far (reported by `close`).
    undelivered: u64,
}

impl EsOutputInstance {
    /// Collects finished bulk tasks.
    fn reap(&mut self) {
        while let Ok(u) = self.done_rx.try_recv() {
            self.inflight = self.inflight.saturating_sub(1);
            self.undelivered += u;
        }
    }

    /// Sends the buffer. Blocks for a free slot (until `deadline` if given,
    /// and never past the shutdown deadline); without a slot in time the
    /// documents fail (`shutdown`).
    fn flush(&mut self, deadline: Option<Instant>) {
        if self.buffer.is_empty() {
            return;
        }
        let waited = Instant::now();
        let slot = self.shared.slots.acquire(deadline);
        self.metrics
            .slot_wait_ns
            .inc_by(waited.elapsed().as_nanos() as u64);
        let body = match self.buffer.take() {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err((e, acks)) => {
                tracing::error!(documents = acks.len(), error = %e, "cannot finish bulk body; documents counted as failed");
                self.telemetry.fail(fail::IO, acks.len());
                return;
            }
        };
        let Some(slot) = slot else {
            let n = body.docs();
            tracing::warn!(
                documents = n,
                "no bulk request slot before the shutdown deadline; documents counted as failed"
            );
            self.telemetry.fail(fail::SHUTDOWN, n);
            self.undelivered += n as u64;
            return;
        };
        self.reap();
        self.inflight += 1;
        let task = Task {
            shared: Arc::clone(&self.shared),
            telemetry: Arc::clone(&self.telemetry),
            metrics: self.metrics.clone(),
            remaining: Arc::new(AtomicU64::new(body.docs() as u64)),
        };
        let done = self.done_tx.clone();
        let cancel = Stop {
            cancel: self.cancel.subscribe(),
            shutdown: self.shared.shutdown.subscribe(),
        };
        self.handle.spawn(async move {
            use futures_util::FutureExt;
            let remaining = Arc::clone(&task.remaining);
            let telemetry = Arc::clone(&task.telemetry);
            let r = std::panic::AssertUnwindSafe(task.deliver(body, slot, cancel))
                .catch_unwind()
                .await;
            let abandoned = match r {
                Ok(n) => n,
                Err(_) => {
                    let n = remaining.load(Ordering::Relaxed);
                    tracing::error!(
                        documents = n,
                        "bulk task panicked; documents counted as failed"
                    );
                    telemetry.fail(fail::PANIC, n as usize);
                    0
                }
            };
            let _ = done.send(abandoned);
        });
    }
}

impl Output for EsOutputInstance {
    fn append(&mut self, doc: &[u8], ack: Ack) {
        if self.closed {
            tracing::warn!("document appended after close; counted as failed");
            self.telemetry.fail(fail::SHUTDOWN, 1);
            return;
        }
        if let Err((e, _ack)) = self.buffer.push(doc, ack) {
            tracing::error!(error = %e, instance = self.instance, "cannot add document to bulk; counted as failed");
            self.telemetry.fail(fail::IO, 1);
            return;
        }
        if self.buffer.raw_len() >= self.shared.service.settings.flush_bytes {
            self.flush(None);
        }
    }

    fn tick(&mut self) {
        self.reap();
        let due = self
            .buffer
            .started()
            .is_some_and(|t| t.elapsed() >= self.shared.service.settings.flush_interval);
        if due {
            self.flush(None);
        }
    }

    fn close(&mut self, deadline: Instant) -> CloseReport {
        if self.closed {
            return CloseReport::default();
        }
        self.closed = true;
        self.flush(Some(deadline));
        self.reap();
        while self.inflight > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.done_rx.recv_timeout(deadline - now) {
                Ok(n) => {
                    self.inflight -= 1;
                    self.undelivered += n;
                }
                Err(_) => break,
            }
        }
        if self.inflight > 0 {
            // Deadline reached: tasks count what they still hold as failed (shutdown).
            let _ = self.cancel.send(true);
            let grace = Instant::now() + Duration::from_secs(2);
            while self.inflight > 0 {
                let now = Instant::now();
                if now >= grace {
                    break;
                }
                match self.done_rx.recv_timeout(grace - now) {
                    Ok(n) => {
                        self.inflight -= 1;
                        self.undelivered += n;
                    }
                    Err(_) => break,
                }
            }
            if self.inflight > 0 {
                tracing::error!(
                    bulks = self.inflight,
                    "bulk requests did not stop after the shutdown deadline"
                );
            }
        }
        let undelivered = std::mem::take(&mut self.undelivered);
        if undelivered > 0 {
            tracing::warn!(
                documents = undelivered,
                instance = self.instance,
                "documents not delivered to elasticsearch by the shutdown deadline; counted as failed (shutdown)"
            );
        }
        CloseReport { undelivered }
    }
}

impl Drop for EsOutputInstance {
    fn drop(&mut self) {
        if !self.closed {
            let timeout = self.shared.service.client.timeout();
            self.close(Instant::now() + timeout);
        }
    }
}

/// One bulk's journey, from first send to the last document resolved.
struct Task {
    shared: Arc<Shared>,
    telemetry: Arc<Telemetry>,
    metrics: EsMetrics,
    /// Documents not yet counted (read if the task panics).
    remaining: Arc<AtomicU64>,
}

/// What a bulk task listens to for giving up: its instance's close deadline
/// (`cancel` turns true) and the factory-wide shutdown deadline.
struct Stop {
    cancel: watch::Receiver<bool>,
    shutdown: watch::Receiver<Option<Instant>>,
}

impl Stop {
    fn now(&self) -> bool {
        *self.cancel.borrow() || self.shutdown.borrow().is_some_and(|d| Instant::now() >= d)
    }
}

/// Resolves when the bulk must be abandoned.
async fn cancelled(stop: &mut Stop) {
    let shutdown = &mut stop.shutdown;
    let global = async move {
        match shutdown.wait_for(Option::is_some).await.map(|d| *d) {
            Ok(Some(d)) => tokio::time::sleep_until(d.into()).await,
            _ => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = stop.cancel.wait_for(|c| *c) => {},
        _ = global => {},
    }
}

impl Task {
    fn count(&self, reason: Option<&str>, n: usize) {
        if n == 0 {
            return;
        }
        match reason {
            None => self.telemetry.events_indexed.inc_by(n as u64),
            Some(r) => self.telemetry.fail(r, n),
        }
        self.remaining.fetch_sub(n as u64, Ordering::Relaxed);
    }

    fn abandon(&self, body: BulkBody) -> u64 {
        let n = body.docs();
        self.count(Some(fail::SHUTDOWN), n);
        self.metrics.bulk(outcome::SHUTDOWN);
        drop(body);
        n as u64
    }

    /// Returns the documents abandoned at shutdown (already counted).
    async fn deliver(self, mut body: BulkBody, slot: SlotGuard, mut cancel: Stop) -> u64 {
        let _slot = slot;
        self.metrics.in_flight.inc();
        struct Dec(prometheus::IntGauge);
        impl Drop for Dec {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let _dec = Dec(self.metrics.in_flight.clone());

        let s = &self.shared.service.settings;
        let policy = RetryPolicy::from_settings(s);
        let mut retries = policy.start();
        let idempotent = s.idempotent_ids;
        let mut resends = vec![0u32; body.docs()];
        loop {
            if cancel.now() {
                return self.abandon(body);
            }
            self.metrics.body_bytes.inc_by(body.bytes.len() as u64);
            self.metrics.raw_bytes.inc_by(body.raw_len() as u64);
            let sent = tokio::select! {
                r = self.shared.service.send_bulk(body.bytes.clone(), body.gzip, &self.metrics.host_down) => r,
                _ = cancelled(&mut cancel) => return self.abandon(body),
            };
            let failure = match sent {
                Ok(resp) => match response::parse(&resp) {
                    Ok(items) => {
                        self.shared.ready.store(true, Ordering::Relaxed);
                        self.metrics.bulk(outcome::OK);
                        let mut keep = Vec::new();
                        let mut keep_resends = Vec::new();
                        let mut rejections = Rejections::default();
                        let (mut indexed, mut exhausted) = (0usize, 0usize);
                        for (i, tries) in resends.iter().enumerate() {
                            let item = items.get(i);
                            if item.and_then(|it| it.failure_store.as_deref()) == Some("used") {
                                self.metrics.failure_store.inc();
                            }
                            match response::outcome(item, idempotent) {
                                Outcome::Indexed => indexed += 1,
                                Outcome::Retry if retries.item_may_retry(*tries) => {
                                    keep.push(i);
                                    keep_resends.push(tries + 1);
                                }
                                Outcome::Retry => exhausted += 1,
                                Outcome::Rejected {
                                    index,
                                    kind,
                                    reason,
                                } => rejections.add(index, kind, reason),
                            }
                        }
                        self.count(None, indexed);
                        self.count(Some(fail::REJECTED), rejections.total() as usize);
                        rejections.log();
                        if exhausted > 0 {
                            tracing::warn!(
                                documents = exhausted,
                                max_retries = policy.max_retries(),
                                "elasticsearch kept rejecting documents (429/5xx); retries exhausted, counted as failed"
                            );
                            self.count(Some(fail::RETRIES_EXHAUSTED), exhausted);
                        }
                        if keep.is_empty() {
                            return 0;
                        }
                        body = match body.subset(&keep) {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::error!(documents = keep.len(), error = %e, "cannot rebuild bulk for resend; counted as failed");
                                self.count(Some(fail::IO), keep.len());
                                return 0;
                            }
                        };
                        resends = keep_resends;
                        self.metrics.docs_resent.inc_by(keep.len() as u64);
                        let delay = retries.next_item_round();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {},
                            _ = cancelled(&mut cancel) => return self.abandon(body),
                        }
                        continue;
                    }
                    Err(e) => service::SendError::Transport {
                        host: String::new(),
                        reason: e.to_string(),
                    },
                },
                Err(e) => e,
            };
            // The request failed as a whole.
            let n = body.docs();
            let delay = match retries.request_failed(&failure) {
                RequestDecision::RetryAfter(delay) => delay,
                RequestDecision::Refused => {
                    tracing::error!(documents = n, error = %failure, "bulk request refused by elasticsearch; documents counted as failed");
                    self.metrics.bulk(outcome::FAILED);
                    self.count(Some(fail::REJECTED), n);
                    return 0;
                }
                RequestDecision::BudgetSpent => {
                    tracing::error!(
                        documents = n,
                        attempts = retries.failures(),
                        budget = ?policy.budget(),
                        error = %failure,
                        "bulk request kept failing; retry budget spent, documents counted as failed"
                    );
                    self.metrics.bulk(outcome::FAILED);
                    self.count(Some(fail::RETRIES_EXHAUSTED), n);
                    return 0;
                }
            };
            self.metrics.bulk(outcome::RETRIED);
            tracing::warn!(documents = n, attempt = retries.failures(), retry_in = ?delay, error = %failure, "bulk request failed; will retry");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {},
                _ = cancelled(&mut cancel) => return self.abandon(body),
            }
        }
    }
}
