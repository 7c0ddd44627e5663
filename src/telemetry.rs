//! Internal events: every counter and gauge apm-rs keeps, named in one place
//! so the metrics endpoint and its documentation agree.
//!
//! Accounting identity (docs/architecture.md): at any moment
//! `events_received = events_rejected + events_accepted` and
//! `events_accepted + aggregation_documents = events_indexed + events_failed
//! + events_discarded + in_flight`, where `in_flight` is what has been
//! handed to the pipeline and not yet indexed or failed. Aggregated metric
//! documents are produced by the server, not received: they have their own
//! counter and share the output's `indexed`/`failed` counters with events.
//! [`Telemetry::accounting`] reads it.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Reasons an event is rejected before it is accepted (the client saw the reason).
pub mod reject {
    pub const INVALID: &str = "invalid";
    pub const TOO_LARGE: &str = "too_large";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const QUEUE_FULL: &str = "queue_full";
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const INTERNAL: &str = "internal";
}

/// Reasons an accepted event is permanently failed (logged and counted).
pub mod fail {
    pub const PANIC: &str = "panic";
    pub const SHUTDOWN: &str = "shutdown";
    pub const REJECTED: &str = "rejected_by_output";
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    pub const IO: &str = "io";
    /// Made a stage panic twice and was written to the dead-letter file.
    pub const DEAD_LETTER: &str = "dead_letter";
}

/// All metrics of one server instance (not global: tests run several servers per process).
#[derive(Clone)]
pub struct Telemetry {
    pub registry: Registry,
    /// Event lines read from requests after the metadata line (a v3 transaction line counts each event it expands into).
    pub events_received: IntCounter,
    /// Events that passed decode, allow lists and rate limits and were queued.
    pub events_accepted: IntCounter,
    pub events_rejected: IntCounterVec,
    pub events_indexed: IntCounter,
    pub events_failed: IntCounterVec,
    /// Accepted events dropped by design (unsampled non-RUM transactions).
    pub events_discarded: IntCounterVec,
    pub requests: IntCounterVec,
    /// OTLP/gRPC calls by method path and gRPC status code.
    pub grpc_requests: IntCounterVec,
    pub stage_panics: IntCounterVec,
    pub stage_processed: IntCounterVec,
    pub stage_busy_ns: IntCounterVec,
    pub stage_inbox_depth: IntGaugeVec,
    pub stage_inbox_capacity: IntGaugeVec,
    pub stage_instances: IntGaugeVec,
    pub memory_budget_in_use: IntGauge,
    pub memory_budget_limit: IntGauge,
    /// Anonymous requests refused by the per-IP limiter before the handler.
    pub rate_limited_requests: IntCounter,
    /// Metric documents produced by the aggregator, by metricset.
    pub aggregation_documents: IntCounterVec,
    /// Heap bytes held by the aggregator's open windows (sampled at scrape).
    pub aggregation_state_bytes: IntGauge,
    /// Groups held by the aggregator's open windows (sampled at scrape).
    pub aggregation_groups: IntGauge,
    /// Only in the view the disk queue's delivery output counts through
    /// ([`Telemetry::for_disk_queue_delivery`]): documents that output
    /// abandons at the shutdown deadline stay in the queue (the next run
    /// delivers them), so they are counted here, not as failed.
    stayed_queued: Option<Arc<AtomicU64>>,
    /// Shared by every view of one server's telemetry.
    server: Arc<()>,
}

/// A snapshot of the accounting counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    pub received: u64,
    pub rejected: u64,
    pub accepted: u64,
    pub indexed: u64,
    pub failed: u64,
    pub discarded: u64,
    /// Aggregated metric documents produced (not events: owed to the output too).
    pub produced: u64,
}

impl Accounting {
    /// Accepted events and produced documents not yet indexed, failed or discarded.
    pub fn in_flight(&self) -> i64 {
        (self.accepted + self.produced) as i64
            - (self.indexed + self.failed + self.discarded) as i64
    }
    /// received == rejected + accepted (every received event has an answer).
    pub fn balanced(&self) -> bool {
        self.received == self.rejected + self.accepted
    }
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static metric definition");
    reg.register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(c.clone()))
        .expect("unique metric name");
    c
}

fn gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    reg.register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

fn gauge_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    reg.register(Box::new(g.clone()))
        .expect("unique metric name");
    g
}

impl Telemetry {
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("apm_rs".into()), None).expect("valid prefix");
        Telemetry {
            events_received: counter(
                &r,
                "events_received_total",
                "Events read from intake requests.",
            ),
            events_accepted: counter(
                &r,
                "events_accepted_total",
                "Events accepted and queued for indexing.",
            ),
            events_rejected: counter_vec(
                &r,
                "events_rejected_total",
                "Events rejected, by reason the client saw.",
                &["reason"],
            ),
            events_indexed: counter(
                &r,
                "events_indexed_total",
                "Documents indexed by the output.",
            ),
            events_failed: counter_vec(
                &r,
                "events_failed_total",
                "Accepted events permanently failed, by reason.",
                &["reason"],
            ),
            events_discarded: counter_vec(
                &r,
                "events_discarded_total",
                "Accepted events dropped by design, by reason.",
                &["reason"],
            ),
            requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests by route and status.",
                &["route", "status"],
            ),
            grpc_requests: counter_vec(
                &r,
                "grpc_requests_total",
                "OTLP/gRPC calls by method and gRPC status code.",
                &["method", "code"],
            ),
            stage_panics: counter_vec(
                &r,
                "stage_panics_total",
                "Panics caught in stage actors (instance restarted).",
                &["stage"],
            ),
            stage_processed: counter_vec(
                &r,
                "stage_events_processed_total",
                "Events processed per stage.",
                &["stage"],
            ),
            stage_busy_ns: counter_vec(
                &r,
                "stage_busy_nanoseconds_total",
                "Time stages spent processing messages.",
                &["stage"],
            ),
            stage_inbox_depth: gauge_vec(
                &r,
                "stage_inbox_depth",
                "Messages waiting in a stage inbox.",
                &["stage"],
            ),
            stage_inbox_capacity: gauge_vec(
                &r,
                "stage_inbox_capacity",
                "Capacity of a stage inbox.",
                &["stage"],
            ),
            stage_instances: gauge_vec(
                &r,
                "stage_instances",
                "Running instances of a stage.",
                &["stage"],
            ),
            memory_budget_in_use: gauge(
                &r,
                "memory_budget_in_use_bytes",
                "Request bytes in flight.",
            ),
            memory_budget_limit: gauge(&r, "memory_budget_limit_bytes", "Memory budget."),
            rate_limited_requests: counter(
                &r,
                "rate_limited_requests_total",
                "Anonymous requests refused by the per-IP rate limit (429).",
            ),
            aggregation_documents: counter_vec(
                &r,
                "aggregation_documents_total",
                "Metric documents produced by the aggregator, by metricset.",
                &["metricset"],
            ),
            aggregation_state_bytes: gauge(
                &r,
                "aggregation_state_bytes",
                "Heap bytes held by the aggregator's open windows.",
            ),
            aggregation_groups: gauge(
                &r,
                "aggregation_groups",
                "Metric groups held by the aggregator's open windows.",
            ),
            registry: r,
            stayed_queued: None,
            server: Arc::new(()),
        }
    }

    /// The same counters, for the output fed by the disk queue: what it
    /// abandons at the shutdown deadline (`failed{shutdown}` elsewhere) is
    /// still queued on disk and delivered by the next run, so counting it
    /// as failed too would count those events twice across the restart.
    pub fn for_disk_queue_delivery(&self) -> Telemetry {
        Telemetry {
            stayed_queued: Some(Arc::new(AtomicU64::new(0))),
            ..self.clone()
        }
    }

    /// Documents the disk queue's delivery output abandoned at the shutdown
    /// deadline so far (0 in any other view). Read with `Acquire` after the
    /// acks of a record were seen dropped: if this is still 0, none of them
    /// was dropped by an abandonment (the output counts before it drops).
    pub fn stayed_queued(&self) -> u64 {
        self.stayed_queued
            .as_ref()
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// True when both are views of one server's telemetry.
    pub fn same_server(&self, other: &Telemetry) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }

    pub fn reject(&self, reason: &str, n: usize) {
        if n > 0 {
            self.events_rejected
                .with_label_values(&[reason])
                .inc_by(n as u64);
        }
    }

    pub fn fail(&self, reason: &str, n: usize) {
        if let (Some(stayed), fail::SHUTDOWN) = (&self.stayed_queued, reason) {
            stayed.fetch_add(n as u64, Ordering::SeqCst);
            return;
        }
        if n > 0 {
            self.events_failed
                .with_label_values(&[reason])
                .inc_by(n as u64);
        }
    }

    fn sum(v: &IntCounterVec) -> u64 {
        use prometheus::core::Collector;
        v.collect()
            .iter()
            .flat_map(|mf| {
                mf.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
            })
            .sum()
    }

    pub fn accounting(&self) -> Accounting {
        Accounting {
            received: self.events_received.get(),
            rejected: Self::sum(&self.events_rejected),
            accepted: self.events_accepted.get(),
            indexed: self.events_indexed.get(),
            failed: Self::sum(&self.events_failed),
            discarded: Self::sum(&self.events_discarded),
            produced: Self::sum(&self.aggregation_documents),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
