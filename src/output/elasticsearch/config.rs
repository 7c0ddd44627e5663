//! Resolved settings of the Elasticsearch output: `output.elasticsearch.*`
//! turned into the client settings (hosts, headers, TLS, proxy, timeout:
//! resolved by [`crate::es::Settings`]) and the bulk/retry tuning.
//!
//! Invariants: the flush size is never below 24 KiB when compressing (so a
//! gzip member is worth its header); every duration is positive.

use crate::config::EsOutput;
use crate::es;
use std::time::Duration;

/// Why the output's settings cannot be used.
pub type SettingsError = es::Error;

/// Query string of every bulk request: data streams only, and only the
/// per-item fields the response parser reads (see docs/elasticsearch.md).
pub const BULK_QUERY: &str = "require_data_stream=true&filter_path=items.*._index,items.*.status,items.*.failure_store,items.*.error.type,items.*.error.reason&include_source_on_error=false";

/// Everything the output needs, resolved once at start-up.
#[derive(Clone, Debug)]
pub struct EsSettings {
    /// Hosts, headers (auth included), TLS, proxy, timeout, host skip.
    pub client: es::Settings,
    /// gzip level 0..=9 (0 = no compression).
    pub compression_level: u32,
    /// Flush once the uncompressed bulk reaches this size.
    pub flush_bytes: usize,
    /// Flush a non-empty bulk at least this often.
    pub flush_interval: Duration,
    /// Bulk requests in flight at once, over all indexer instances.
    pub max_requests: usize,
    /// Resends of one document answered 429/5xx per item.
    pub max_retries: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_init: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// How long a bulk failing as a whole (connection error, timeout, 429,
    /// 5xx) keeps being retried, counted from its first failure. Default:
    /// 5 × `backoff.max` (5 minutes with the defaults), and never fewer than
    /// `max_retries` attempts.
    pub retry_budget: Duration,
    /// Give every document a random `_id` chosen once, so a resent `create`
    /// answers 409 (counted as indexed) instead of indexing twice. Off by
    /// default: time-series data streams reject client-chosen ids.
    pub idempotent_ids: bool,
    /// How often the reachability check runs once Elasticsearch answered.
    pub ready_check_interval: Duration,
}

impl EsSettings {
    /// Resolves `output.elasticsearch`.
    pub fn from_config(es: &EsOutput) -> Result<Self, SettingsError> {
        let c = &es.client;
        let mut client =
            es::Settings::elasticsearch("output.elasticsearch", c, es::Credentials::FromSettings)?;
        client.headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        let backoff_init = c.backoff.init.get().max(Duration::from_millis(1));
        let backoff_max = c.backoff.max.get().max(backoff_init);
        let min_flush = if es.compression_level > 0 {
            24 * 1024
        } else {
            1
        };
        Ok(EsSettings {
            client,
            compression_level: es.compression_level.min(9),
            flush_bytes: (es.flush_bytes.get() as usize).max(min_flush),
            flush_interval: es.flush_interval.get().max(Duration::from_millis(1)),
            max_requests: es.max_requests.max(1),
            max_retries: c.max_retries,
            backoff_init,
            backoff_max,
            retry_budget: match es.retry_budget.get() {
                d if d.is_zero() => backoff_max.saturating_mul(5),
                d => d,
            },
            idempotent_ids: es.idempotent_ids,
            ready_check_interval: Duration::from_secs(5),
        })
    }

    /// Builds the output's client (reads the TLS files; contacts nobody).
    pub fn client(&self) -> Result<es::Client, SettingsError> {
        es::Client::new(&self.client)
    }
}
