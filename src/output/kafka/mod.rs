//! Kafka output (`output.kafka`): each document becomes a record whose
//! value is the broker message (the source document with `@metadata`), on
//! the topic rendered from `topic`, keyed by the rendered `key`, on a
//! partition chosen by the configured partitioner.
//!
//! Shape (Vector style): [`config`] validates the settings (unsupported
//! values stop start-up naming the key); [`request_builder`] renders topic,
//! key and value and picks partitions; [`service`] owns the client,
//! metadata and per-partition producers; [`retry`] decides which failures
//! are retried.
//!
//! Client: `rskafka` (pure Rust, rustls, SASL PLAIN/SCRAM); see
//! docs/outputs.md for why not `rdkafka`. It is async, so the output owns a
//! small tokio runtime; indexer threads (plain OS threads) enter it with
//! `block_on`, never an executor thread of the HTTP server.
//!
//! Invariants:
//! * documents are sent in batches of at most `bulk_max_size`, grouped by
//!   topic and partition; a record counts as indexed once the broker
//!   acknowledged it (rskafka always asks for all in-sync replicas, which
//!   satisfies `required_acks: 1` and `-1`);
//! * a failed produce (connection, timeout, leadership change) is resent
//!   after a back-off, at most `max_retries` times, then its records count
//!   as failed (`retries_exhausted`); a refusal (topic missing, message too
//!   large for the broker, SASL refused) fails them at once
//!   (`rejected_by_output`); a message over `max_message_bytes` or whose
//!   topic/key cannot be rendered fails alone before sending;
//! * while a batch is retried the indexer thread waits, so the intake
//!   answers 503 once the pipeline is full;
//! * after the shutdown deadline nothing is retried (`shutdown`).

pub mod config;
pub mod request_builder;
pub mod retry;
pub mod service;

use super::message::backoff::{Backoff, Shutdown};
use super::{Ack, CloseReport, Output, OutputError, OutputFactory};
use crate::telemetry::{fail, Telemetry};
use config::KafkaSettings;
use request_builder::{BuildError, PartitionPicker, Pending};
use retry::Verdict;
use rskafka::record::Record;
use service::{ProduceError, Service};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds the Kafka output factory from `output.kafka`.
pub fn factory(cfg: &crate::config::Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    let c = cfg
        .output
        .kafka
        .as_ref()
        .ok_or_else(|| OutputError::Config("output.kafka is not configured".into()))?;
    let settings = KafkaSettings::from_config(c).map_err(|e| OutputError::Config(e.to_string()))?;
    Ok(Arc::new(KafkaFactory::new(settings)?))
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

pub struct KafkaFactory {
    service: Arc<Service>,
    shutdown: Arc<Shutdown>,
    rt: Arc<Runtime>,
    handle: tokio::runtime::Handle,
}

impl KafkaFactory {
    /// Builds the runtime; does not contact the brokers.
    pub fn new(settings: KafkaSettings) -> Result<Self, OutputError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("apm-rs-kafka-output")
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(KafkaFactory {
            service: Arc::new(Service::new(settings)),
            shutdown: Arc::new(Shutdown::default()),
            rt: Arc::new(Runtime(Some(rt))),
            handle,
        })
    }
}

impl OutputFactory for KafkaFactory {
    fn build(
        &self,
        instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(KafkaOutput {
            picker: PartitionPicker::new(self.service.settings.partitioner, instance),
            service: Arc::clone(&self.service),
            shutdown: Arc::clone(&self.shutdown),
            _rt: Arc::clone(&self.rt),
            handle: self.handle.clone(),
            batch: Vec::new(),
            acks: Vec::new(),
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

struct KafkaOutput {
    service: Arc<Service>,
    picker: PartitionPicker,
    shutdown: Arc<Shutdown>,
    _rt: Arc<Runtime>,
    handle: tokio::runtime::Handle,
    batch: Vec<Pending>,
    acks: Vec<Ack>,
    telemetry: Arc<Telemetry>,
}

impl KafkaOutput {
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut by_topic: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for p in self.batch.drain(..) {
            by_topic.entry(p.topic).or_default().push(p.record);
        }
        for (topic, records) in by_topic {
            self.deliver(&topic, records);
        }
        self.acks.clear();
    }

    /// Delivers one topic's records, retrying as [`retry`] decides, and counts their fate.
    fn deliver(&mut self, topic: &str, records: Vec<Record>) {
        let s = &self.service.settings;
        let mut backoff = Backoff::new(s.backoff_init, s.backoff_max);
        let max_retries = s.max_retries;
        let mut unassigned = Some(records);
        let mut remaining: Vec<(i32, Vec<Record>)> = Vec::new();
        let mut retries = 0;
        loop {
            let mut error = None;
            if let Some(records) = unassigned.take() {
                match self.handle.block_on(self.service.partitions(topic)) {
                    Ok(parts) => {
                        let mut groups: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
                        for r in records {
                            let i = self.picker.pick(r.key.as_deref(), parts.len());
                            groups.entry(parts[i]).or_default().push(r);
                        }
                        remaining = groups.into_iter().collect();
                    }
                    Err(e) => {
                        unassigned = Some(records);
                        error = Some(e);
                    }
                }
            }
            if error.is_none() {
                let mut failed = Vec::new();
                for (partition, recs) in remaining.drain(..) {
                    let n = recs.len();
                    let sent =
                        self.handle
                            .block_on(self.service.produce(topic, partition, recs.clone()));
                    match sent {
                        Ok(()) => self.telemetry.events_indexed.inc_by(n as u64),
                        Err(e) => {
                            failed.push((partition, recs));
                            error = Some(e);
                        }
                    }
                }
                remaining = failed;
            }
            let Some(e) = error else { return };
            let n = unassigned.as_ref().map_or(0, Vec::len)
                + remaining.iter().map(|(_, r)| r.len()).sum::<usize>();
            let verdict = match &e {
                ProduceError::UnknownTopic(_) => Verdict::Refuse,
                ProduceError::Client(c) => retry::classify(c),
                ProduceError::Timeout(_) => Verdict::Retry,
            };
            let reason = if verdict == Verdict::Refuse {
                tracing::error!(topic, documents = n, error = %e, "kafka output: refused; documents counted as failed");
                fail::REJECTED
            } else if retries >= max_retries {
                tracing::error!(topic, documents = n, retries, error = %e, "kafka output: retries exhausted; documents counted as failed");
                fail::RETRIES_EXHAUSTED
            } else {
                retries += 1;
                let delay = backoff.next_delay();
                tracing::warn!(topic, documents = n, retry = retries, delay = ?delay, error = %e, "kafka output: produce failed; retrying");
                self.handle.block_on(self.service.reset());
                if !self.shutdown.expired() && self.shutdown.sleep(delay) {
                    continue;
                }
                tracing::error!(topic, documents = n, "kafka output: shutdown deadline reached while retrying; documents counted as failed");
                fail::SHUTDOWN
            };
            self.telemetry.fail(reason, n);
            return;
        }
    }
}

impl Output for KafkaOutput {
    fn append(&mut self, doc: &[u8], ack: Ack) {
        let version = crate::version::COMPAT_VERSION;
        match request_builder::build(doc, &self.service.settings, version) {
            Ok(p) => {
                self.batch.push(p);
                self.acks.push(ack);
            }
            Err(e) => {
                match &e {
                    BuildError::TooLarge { .. } => {
                        tracing::error!(error = %e, "kafka output: document counted as failed")
                    }
                    BuildError::Message(_) => {
                        tracing::error!(error = %e, "kafka output: cannot build the message; document counted as failed")
                    }
                }
                self.telemetry.fail(fail::REJECTED, 1);
                return;
            }
        }
        if self.batch.len() >= self.service.settings.bulk_max_size {
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
