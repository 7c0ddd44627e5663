//! The memory queue (`queue.type: memory`, the default): accepted events
//! wait in the bounded stage inboxes and the output's bulk buffers, within
//! `pipeline.memory_budget`. A 202 means the batch passed the allow lists
//! and rate limits and is owed to the output; a crash loses what is held.
//!
//! Its document ids: a random id chosen once per process and a sequence
//! number shared by every bulk buffer of the process, so ids never repeat
//! within a process and every resend of a document repeats its id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn process_queue_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(rand::random)
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The next document id of this process's memory queue.
pub fn next_id() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    super::document_id(process_queue_id(), n >> 24, (n & 0xff_ffff) as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_queue_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::next_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
