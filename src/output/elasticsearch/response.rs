//! Parsing of bulk responses (as trimmed by our `filter_path`) into one
//! outcome per document, and grouping of permanent failures for logging.
//!
//! Invariants: nothing Elasticsearch sends can panic here; a document with no
//! matching item (short `items` array) is treated as retryable, never as
//! indexed; error reasons are truncated and never contain the document (the
//! request asks `include_source_on_error=false`).

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed bulk response: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[derive(Debug, Default, Deserialize)]
pub struct ItemError {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Item {
    #[serde(rename = "_index", default)]
    pub index: Option<String>,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub error: Option<ItemError>,
    #[serde(default)]
    pub failure_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Response {
    #[serde(default)]
    items: Vec<HashMap<String, Item>>,
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Indexed,
    /// 429, 5xx or no item: send again (bounded by `max_retries`).
    Retry,
    /// Any other status: permanent.
    Rejected {
        index: String,
        kind: String,
        reason: String,
    },
}

/// Parses a bulk response body into one item per document (`None` where missing).
pub fn parse(body: &[u8]) -> Result<Vec<Item>, ResponseError> {
    let r: Response = serde_json::from_slice(body)?;
    Ok(r.items
        .into_iter()
        .map(|m| m.into_values().next().unwrap_or_default())
        .collect())
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The outcome of document `i` given the parsed items.
/// `idempotent`: a 409 means an earlier attempt of this very document was indexed.
pub fn outcome(item: Option<&Item>, idempotent: bool) -> Outcome {
    let Some(item) = item else {
        return Outcome::Retry;
    };
    match item.status {
        200..=299 => Outcome::Indexed,
        409 if idempotent => Outcome::Indexed,
        0 | 429 | 500..=599 => Outcome::Retry,
        _ => {
            let e = item.error.as_ref();
            Outcome::Rejected {
                index: item.index.clone().unwrap_or_default(),
                kind: e
                    .and_then(|e| e.kind.clone())
                    .unwrap_or_else(|| format!("status_{}", item.status)),
                reason: truncate(e.and_then(|e| e.reason.as_deref()).unwrap_or(""), 300),
            }
        }
    }
}

/// Permanent failures of one bulk, grouped by (index, error type): count and one sample reason.
#[derive(Debug, Default)]
pub struct Rejections {
    pub groups: BTreeMap<(String, String), (u64, String)>,
}

impl Rejections {
    pub fn add(&mut self, index: String, kind: String, reason: String) {
        let e = self.groups.entry((index, kind)).or_insert((0, reason));
        e.0 += 1;
    }

    pub fn total(&self) -> u64 {
        self.groups.values().map(|(n, _)| n).sum()
    }

    /// One warning per group, without document bodies.
    pub fn log(&self) {
        for ((index, kind), (count, reason)) in &self.groups {
            tracing::warn!(
                index = %index,
                error_type = %kind,
                count = *count,
                sample_reason = %reason,
                "elasticsearch rejected documents; counted as failed"
            );
        }
    }
}
