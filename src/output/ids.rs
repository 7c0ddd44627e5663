//! Document ids that make delivery idempotent.
//!
//! Documents of data streams that are not time series (traces, logs,
//! errors, RUM) get an `_id` from a queue id and their position, so a
//! resent or replayed `create` of an indexed document answers 409 (counted
//! as indexed) instead of duplicating. Metrics data streams are time series
//! (TSDS): Elasticsearch rejects a client-chosen `_id` there and derives the
//! id from the dimensions and the timestamp itself, so a duplicate is
//! answered 409 by the data stream; those documents get no `_id`.
//!
//! Invariant: a document keeps the id it was first given on every resend
//! (the bulk buffer writes it once; the disk queue derives it from the
//! record's position), so Elasticsearch answers a duplicate `create` 409.

use base64::Engine;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn process_queue_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(rand::random)
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The next id of this process's sequence (the memory queue's ids): a
/// random id chosen once per process and a sequence number shared by every
/// bulk buffer, so ids never repeat within a process and every resend of a
/// document repeats its id.
pub fn next_process_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    document_id(process_queue_id(), n >> 24, (n & 0xff_ffff) as u32)
}

/// The `_id` of document `index` of record `seq` of queue `queue`: 22
/// url-safe base64 characters (8 bytes queue id, 5 bytes record, 3 bytes
/// document).
pub fn document_id(queue: u64, seq: u64, index: u32) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&queue.to_be_bytes());
    b[8..13].copy_from_slice(&seq.to_be_bytes()[3..]);
    b[13..].copy_from_slice(&index.to_be_bytes()[1..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whether the document with this bulk action line gets a client `_id`:
/// not for time-series (`metrics-*`) data streams, nor when it has one.
pub fn takes_id(action: &[u8]) -> bool {
    const METRICS: &[u8] = b"{\"create\":{\"_index\":\"metrics-";
    !action.starts_with(METRICS) && !contains(action, b"\"_id\"")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Appends `doc` (`action\nsource\n`) to `out` with `id` in its action
/// line when [`takes_id`] says so; as is otherwise.
pub fn with_id(doc: &[u8], id: impl FnOnce() -> String, out: &mut Vec<u8>) {
    let nl = doc.iter().position(|&b| b == b'\n').unwrap_or(doc.len());
    let action = &doc[..nl];
    match action.strip_suffix(b"}}") {
        Some(head) if takes_id(action) => {
            out.extend_from_slice(head);
            out.extend_from_slice(b",\"_id\":\"");
            out.extend_from_slice(id().as_bytes());
            out.extend_from_slice(b"\"}}");
            out.extend_from_slice(&doc[nl..]);
        }
        _ => out.extend_from_slice(doc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_queue_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| next_process_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn ids_go_on_logs_and_traces_but_not_on_time_series_metrics() {
        let mut out = Vec::new();
        with_id(
            b"{\"create\":{\"_index\":\"traces-apm-default\"}}\n{}\n",
            || "X".into(),
            &mut out,
        );
        assert_eq!(
            out,
            b"{\"create\":{\"_index\":\"traces-apm-default\",\"_id\":\"X\"}}\n{}\n"
        );
        out.clear();
        let metric = b"{\"create\":{\"_index\":\"metrics-apm.internal-default\"}}\n{}\n";
        with_id(metric, || "X".into(), &mut out);
        assert_eq!(out, metric);
    }

    #[test]
    fn document_ids_are_fixed_by_queue_record_and_position() {
        assert_eq!(document_id(1, 2, 3), document_id(1, 2, 3));
        assert_ne!(document_id(1, 2, 3), document_id(1, 3, 2));
        assert_ne!(document_id(1, 2, 3), document_id(2, 2, 3));
        assert_eq!(document_id(u64::MAX, u64::MAX, u32::MAX).len(), 22);
    }
}
