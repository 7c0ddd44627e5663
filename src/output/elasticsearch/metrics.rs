//! Counters of the Elasticsearch output, registered on the server's
//! telemetry registry (prefix `apm_rs_`): bulk requests by outcome, document
//! resends, requests in flight, time indexers waited for a free request slot,
//! hosts marked down, bulk body bytes sent (as on the wire and uncompressed).
//!
//! Invariant: registering twice on one registry is not an error: the second
//! set is simply left unregistered (several factories in one test process).

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Bulk request outcomes (label `outcome`).
pub mod outcome {
    /// 2xx with a parseable body.
    pub const OK: &str = "ok";
    /// Failed as a whole (connection, timeout, 429, 5xx, bad body) and retried.
    pub const RETRIED: &str = "retried";
    /// Failed as a whole and not retried (retry budget spent, or a non-retryable 4xx).
    pub const FAILED: &str = "failed";
    /// Abandoned at the shutdown deadline.
    pub const SHUTDOWN: &str = "shutdown";
}

#[derive(Clone)]
pub struct EsMetrics {
    pub bulk_requests: IntCounterVec,
    pub docs_resent: IntCounter,
    pub in_flight: IntGauge,
    pub slot_wait_ns: IntCounter,
    pub host_down: IntCounter,
    pub failure_store: IntCounter,
    pub body_bytes: IntCounter,
    pub raw_bytes: IntCounter,
}

impl EsMetrics {
    pub fn new(reg: &Registry) -> Self {
        let m = EsMetrics {
            bulk_requests: IntCounterVec::new(
                Opts::new(
                    "output_es_bulk_requests_total",
                    "Bulk requests to Elasticsearch, by outcome.",
                ),
                &["outcome"],
            )
            .expect("static metric definition"),
            docs_resent: IntCounter::new(
                "output_es_documents_resent_total",
                "Documents sent again after a per-item 429/5xx.",
            )
            .expect("static metric definition"),
            in_flight: IntGauge::new(
                "output_es_bulk_in_flight",
                "Bulk requests in flight (including those waiting to retry).",
            )
            .expect("static metric definition"),
            slot_wait_ns: IntCounter::new(
                "output_es_slot_wait_nanoseconds_total",
                "Time indexers were blocked waiting for a free bulk request slot (back-pressure).",
            )
            .expect("static metric definition"),
            host_down: IntCounter::new(
                "output_es_host_marked_down_total",
                "Times an Elasticsearch host was skipped for a while after a failure.",
            )
            .expect("static metric definition"),
            failure_store: IntCounter::new(
                "output_es_failure_store_total",
                "Documents Elasticsearch redirected to a failure store.",
            )
            .expect("static metric definition"),
            body_bytes: IntCounter::new(
                "output_es_bulk_body_bytes_total",
                "Bytes of bulk request bodies sent, as on the wire (gzip when compression is on); every attempt counts.",
            )
            .expect("static metric definition"),
            raw_bytes: IntCounter::new(
                "output_es_bulk_raw_bytes_total",
                "Uncompressed bytes of the bulk request bodies counted in output_es_bulk_body_bytes_total.",
            )
            .expect("static metric definition"),
        };
        let _ = reg.register(Box::new(m.bulk_requests.clone()));
        let _ = reg.register(Box::new(m.body_bytes.clone()));
        let _ = reg.register(Box::new(m.raw_bytes.clone()));
        let _ = reg.register(Box::new(m.docs_resent.clone()));
        let _ = reg.register(Box::new(m.in_flight.clone()));
        let _ = reg.register(Box::new(m.slot_wait_ns.clone()));
        let _ = reg.register(Box::new(m.host_down.clone()));
        let _ = reg.register(Box::new(m.failure_store.clone()));
        m
    }

    pub fn bulk(&self, outcome: &str) {
        self.bulk_requests.with_label_values(&[outcome]).inc();
    }
}
