//! Redis output (`output.redis`): each document becomes a broker message
//! (the source document with `@metadata`) pushed onto a list (`RPUSH`) or
//! published on a channel (`PUBLISH`) under the rendered `key`.
//!
//! Shape (Vector style): [`config`] validates the settings;
//! [`request_builder`] renders keys and bodies and builds the pipeline;
//! [`service`] owns the connection and host failover; [`retry`] decides
//! which failures are retried.
//!
//! Client: the `redis` crate's blocking connection (rustls for `ssl`). Each
//! indexer instance is a plain OS thread with its own connection, so no
//! async runtime is needed and none is blocked.
//!
//! Invariants:
//! * documents are sent in pipelined batches of at most `bulk_max_size`,
//!   flushed when full and on every tick; a batch counts as indexed once
//!   Redis answered every command;
//! * a batch that fails with a connection error, a timeout or a "try again"
//!   answer is resent after a back-off, at most `max_retries` times, then
//!   counted as failed (`retries_exhausted`); any other error answer counts
//!   it as failed at once (`rejected_by_output`); a document whose key cannot
//!   be rendered fails alone (`rejected_by_output`);
//! * while a batch is retried the indexer thread waits: its inbox fills and
//!   the intake answers 503, which is the back-pressure;
//! * after the shutdown deadline no batch is retried (`shutdown`).

pub mod config;
pub mod request_builder;
pub mod retry;
pub mod service;

use super::message::backoff::{Backoff, Shutdown};
use super::{Ack, CloseReport, Output, OutputError, OutputFactory};
use crate::telemetry::{fail, Telemetry};
use config::RedisSettings;
use request_builder::Entry;
use service::Service;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds the Redis output factory from `output.redis`.
pub fn factory(cfg: &crate::config::Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    let c = cfg
        .output
        .redis
        .as_ref()
        .ok_or_else(|| OutputError::Config("output.redis is not configured".into()))?;
    let settings = RedisSettings::from_config(c).map_err(|e| OutputError::Config(e.to_string()))?;
    Ok(Arc::new(RedisFactory {
        settings,
        shutdown: Arc::new(Shutdown::default()),
    }))
}

pub struct RedisFactory {
    settings: RedisSettings,
    shutdown: Arc<Shutdown>,
}

impl OutputFactory for RedisFactory {
    fn build(
        &self,
        instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(RedisOutput {
            service: Service::new(self.settings.clone(), instance),
            batch: Vec::new(),
            acks: Vec::new(),
            shutdown: Arc::clone(&self.shutdown),
            telemetry,
        }))
    }

    fn flush_interval(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn shutdown(&self, deadline: Instant) {
        self.shutdown.begin(deadline);
    }
}

struct RedisOutput {
    service: Service,
    batch: Vec<Entry>,
    acks: Vec<Ack>,
    shutdown: Arc<Shutdown>,
    telemetry: Arc<Telemetry>,
}

impl RedisOutput {
    /// Sends the batch, retrying as [`retry`] decides, and counts its fate.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len();
        let s = self.service.settings();
        let pipeline = request_builder::pipeline(&self.batch, s.datatype);
        let mut backoff = Backoff::new(s.backoff_init, s.backoff_max);
        let max_retries = s.max_retries;
        let mut retries = 0;
        let reason = loop {
            let host = self.service.host();
            match self.service.send(&pipeline) {
                Ok(()) => {
                    self.telemetry.events_indexed.inc_by(n as u64);
                    break None;
                }
                Err(e) if !retry::is_retryable(&e) => {
                    tracing::error!(host, documents = n, error = %e, "redis output: batch refused; documents counted as failed");
                    break Some(fail::REJECTED);
                }
                Err(e) if retries >= max_retries => {
                    tracing::error!(host, documents = n, retries, error = %e, "redis output: retries exhausted; documents counted as failed");
                    break Some(fail::RETRIES_EXHAUSTED);
                }
                Err(e) => {
                    retries += 1;
                    let delay = backoff.next_delay();
                    tracing::warn!(host, documents = n, retry = retries, delay = ?delay, error = %e, "redis output: batch failed; retrying");
                    if self.shutdown.expired() || !self.shutdown.sleep(delay) {
                        tracing::error!(documents = n, "redis output: shutdown deadline reached while retrying; documents counted as failed");
                        break Some(fail::SHUTDOWN);
                    }
                }
            }
        };
        if let Some(reason) = reason {
            self.telemetry.fail(reason, n);
        }
        self.batch.clear();
        self.acks.clear();
    }
}

impl Output for RedisOutput {
    fn append(&mut self, doc: &[u8], ack: Ack) {
        let version = crate::version::COMPAT_VERSION;
        match request_builder::build(doc, self.service.settings(), version) {
            Ok(entry) => {
                self.batch.push(entry);
                self.acks.push(ack);
            }
            Err(e) => {
                tracing::error!(error = %e, "redis output: document counted as failed");
                self.telemetry.fail(fail::REJECTED, 1);
                return;
            }
        }
        if self.batch.len() >= self.service.settings().bulk_max_size {
            self.flush();
        }
    }

    fn tick(&mut self) {
        self.flush();
    }

    fn close(&mut self, _deadline: Instant) -> CloseReport {
        self.flush();
        CloseReport::default()
    }
}
