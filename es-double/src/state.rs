//! The double's state: indices of documents, open scrolls, configured API
//! keys, fault settings and call counters. Shared by every HTTP worker and by
//! the Rust handle ([`crate::EsDouble`]).
//!
//! Invariants: documents of an index keep their insertion order; `_id`s are
//! unique per index; counters only grow (until [`State::reset`]).

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

/// Faults injected on demand. The default injects nothing.
///
/// Item faults are deterministic: with a fraction `f`, item number `i`
/// (counted over the double's lifetime) fails when `floor((i+1)·f) >
/// floor(i·f)`, so exactly `f` of the items fail, spread evenly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Fraction (0..=1) of bulk items answered `429 es_rejected_execution_exception`.
    pub item_429_fraction: f64,
    /// Fraction (0..=1) of bulk items answered `400 document_parsing_exception`.
    pub item_reject_fraction: f64,
    /// Stop injecting item faults after this many (None = no limit).
    pub item_fault_limit: Option<u64>,
    /// Answer whole bulk requests with this status (429, 500, 502, 503…) without indexing anything.
    pub request_status: Option<u16>,
    /// Index the bulk, then drop the connection in the middle of the response.
    pub drop_connection: bool,
    /// Stop applying `request_status` / `drop_connection` after this many bulks (None = no limit).
    pub request_fault_limit: Option<u64>,
    /// Latency added to every Elasticsearch route (not to `/_double/*`), in milliseconds.
    pub latency_ms: u64,
    /// Delay, in milliseconds, between indexing a bulk and answering it: a
    /// client that times out meanwhile sees a failure although the documents
    /// are stored (the source of duplicates on resend).
    pub bulk_response_delay_ms: u64,
}

/// How `_has_privileges` answers for one API key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApiKeyAnswer {
    /// 200 with these privileges (privileges not listed are false).
    Privileges {
        username: String,
        privileges: BTreeMap<String, bool>,
    },
    /// This HTTP status with an Elasticsearch error body.
    Status { status: u16 },
}

impl ApiKeyAnswer {
    /// 200, the listed privileges true, every other one false.
    pub fn granted(username: &str, privileges: &[&str]) -> Self {
        ApiKeyAnswer::Privileges {
            username: username.to_string(),
            privileges: privileges.iter().map(|p| (p.to_string(), true)).collect(),
        }
    }
    /// An error status (401, 403, 500…).
    pub fn status(status: u16) -> Self {
        ApiKeyAnswer::Status { status }
    }
}

/// What one bulk request looked like (kept for assertions; last 1000).
#[derive(Clone, Debug, Serialize)]
pub struct BulkRecord {
    pub query: String,
    pub gzip: bool,
    pub content_type: String,
    pub authorization: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub items: usize,
    /// The answer's HTTP status.
    pub status: u16,
}

#[derive(Default)]
pub(crate) struct Index {
    pub docs: Vec<(String, Value)>,
    pub by_id: HashMap<String, usize>,
}

pub(crate) struct Scroll {
    pub hits: Vec<Value>,
    pub pos: usize,
    pub size: usize,
    pub total: usize,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub indices: BTreeMap<String, Index>,
    pub scrolls: HashMap<String, Scroll>,
    pub faults: Faults,
    pub item_faults_used: u64,
    pub request_faults_used: u64,
    pub api_keys: HashMap<String, (String, ApiKeyAnswer)>,
    pub next_id: u64,
    pub next_scroll: u64,
    pub bulk_log: Vec<BulkRecord>,
    pub last_has_privileges_body: Option<String>,
}

/// Shared state of one double.
pub struct State {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) fast: bool,
    pub(crate) fast_docs: AtomicU64,
    pub(crate) bulk_requests: AtomicU64,
    pub(crate) has_privileges_calls: AtomicU64,
    pub(crate) search_calls: AtomicU64,
    pub(crate) items_seen: AtomicU64,
}

/// Outcome of storing one document.
pub(crate) enum Stored {
    Created(String),
    Updated(String),
    Conflict(String),
}

impl State {
    pub(crate) fn new(fast: bool) -> Self {
        State {
            inner: Mutex::new(Inner::default()),
            fast,
            fast_docs: AtomicU64::new(0),
            bulk_requests: AtomicU64::new(0),
            has_privileges_calls: AtomicU64::new(0),
            search_calls: AtomicU64::new(0),
            items_seen: AtomicU64::new(0),
        }
    }

    pub(crate) fn reset(&self) {
        *self.inner.lock() = Inner::default();
        self.fast_docs.store(0, Ordering::Relaxed);
        self.bulk_requests.store(0, Ordering::Relaxed);
        self.has_privileges_calls.store(0, Ordering::Relaxed);
        self.search_calls.store(0, Ordering::Relaxed);
        self.items_seen.store(0, Ordering::Relaxed);
    }

    pub(crate) fn faults(&self) -> Faults {
        self.inner.lock().faults.clone()
    }

    /// Consumes one request-level fault if one applies: `(status, drop_connection)`.
    pub(crate) fn take_request_fault(&self) -> (Option<u16>, bool) {
        let mut g = self.inner.lock();
        let f = &g.faults;
        if f.request_status.is_none() && !f.drop_connection {
            return (None, false);
        }
        if let Some(limit) = f.request_fault_limit {
            if g.request_faults_used >= limit {
                return (None, false);
            }
        }
        let out = (
            f.request_status,
            f.drop_connection && f.request_status.is_none(),
        );
        g.request_faults_used += 1;
        out
    }

    /// The fault for the next item: `Some(429)`, `Some(400)` or `None`.
    pub(crate) fn item_fault(&self, g: &mut Inner) -> Option<u16> {
        let i = self.items_seen.fetch_add(1, Ordering::Relaxed);
        let f = &g.faults;
        if f.item_429_fraction <= 0.0 && f.item_reject_fraction <= 0.0 {
            return None;
        }
        if let Some(limit) = f.item_fault_limit {
            if g.item_faults_used >= limit {
                return None;
            }
        }
        let hit = |frac: f64| {
            let frac = frac.clamp(0.0, 1.0);
            ((i + 1) as f64 * frac).floor() > (i as f64 * frac).floor()
        };
        let out = if hit(f.item_429_fraction) {
            Some(429)
        } else if hit(f.item_reject_fraction) {
            Some(400)
        } else {
            None
        };
        if out.is_some() {
            g.item_faults_used += 1;
        }
        out
    }

    /// Stores a document. `create_only` answers a conflict for an existing id.
    pub(crate) fn store(
        g: &mut Inner,
        index: &str,
        id: Option<&str>,
        doc: Value,
        create_only: bool,
    ) -> Stored {
        let id = match id {
            Some(id) => id.to_string(),
            None => {
                g.next_id += 1;
                format!("dbl{:016x}", g.next_id)
            }
        };
        let idx = g.indices.entry(index.to_string()).or_default();
        if let Some(&pos) = idx.by_id.get(&id) {
            if create_only {
                return Stored::Conflict(id);
            }
            idx.docs[pos].1 = doc;
            return Stored::Updated(id);
        }
        idx.by_id.insert(id.clone(), idx.docs.len());
        idx.docs.push((id.clone(), doc));
        Stored::Created(id)
    }
}
