//! Where accepted events wait for the output, and the ids that make their
//! delivery idempotent.
//!
//! * memory (`queue.type: memory`, the default): the stage inboxes and bulk
//!   buffers, within `pipeline.memory_budget`; a batch is answered 202 at the
//!   rate stage, before source mapping and encoding, and a crash loses what
//!   is held.
//! * [`disk`] (`queue.type: disk`): the indexer stage encodes each batch into
//!   one record of the on-disk log and only then answers the request, so a
//!   202 means the encoded documents are in the log (and on stable storage
//!   with `fsync: request`). [`Delivery`] reads the log in order into the
//!   output and acknowledges a record once every one of its documents was
//!   answered by the output; unacknowledged records are delivered again
//!   after a restart.
//!
//! Why the commit point moves for the disk queue instead of appending at the
//! rate stage: what is on disk must be what is indexed, after source mapping
//! (which may fetch maps from Elasticsearch) and encoding, so a replay never
//! depends on source maps or settings that changed since. The price is that
//! a disk-queue request waits for source mapping and an fsync before its
//! answer; the memory queue keeps answering at the rate stage.
//!
//! Ids: every document outside the metrics data streams carries an `_id`
//! ([`crate::output::ids`]); the disk queue derives it from the queue's id
//! and the document's position in the log.

pub mod dead_letter;
pub mod disk;

use crate::budget::{MemoryBudget, Permit};
use crate::output::ids::{document_id, with_id};
use crate::output::Output;
use disk::{record, DiskQueue};
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Reads the disk queue into an output on its own thread.
pub struct Delivery {
    stop: Arc<parking_lot::Mutex<Option<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl Delivery {
    /// Starts delivering from the acknowledged position. At most
    /// `memory` bytes of records are held by the output at a time.
    pub fn start(
        queue: Arc<DiskQueue>,
        output: Box<dyn Output>,
        memory: usize,
        flush_every: Duration,
    ) -> std::io::Result<Delivery> {
        let stop = Arc::new(parking_lot::Mutex::new(None));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("queue-delivery".into())
            .spawn(move || {
                let mut run = Run {
                    queue,
                    output,
                    budget: MemoryBudget::new(memory.max(1)),
                    outstanding: VecDeque::new(),
                    ack_to: None,
                    ack_docs: 0,
                    last_ack: Instant::now(),
                };
                run.go(&s, flush_every)
            })?;
        Ok(Delivery {
            stop,
            thread: Some(thread),
        })
    }

    /// Delivers until the queue is empty or `deadline`, closes the output
    /// and waits for the thread. What is still unacknowledged stays on disk.
    pub fn stop(&mut self, deadline: Instant) {
        *self.stop.lock() = Some(deadline);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("disk queue delivery thread panicked");
            }
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(Instant::now());
        }
    }
}

struct Run {
    queue: Arc<DiskQueue>,
    output: Box<dyn Output>,
    budget: Arc<MemoryBudget>,
    /// Records handed to the output, oldest first, with their documents' shared ack.
    outstanding: VecDeque<(u64, u32, Weak<Permit>)>,
    ack_to: Option<u64>,
    ack_docs: u64,
    last_ack: Instant,
}

/// How often the acknowledged position is written.
const ACK_EVERY: Duration = Duration::from_millis(100);

/// How long before the shutdown deadline acknowledging stops.
const SETTLE_MARGIN: Duration = Duration::from_millis(200);

impl Run {
    fn go(&mut self, stop: &parking_lot::Mutex<Option<Instant>>, flush_every: Duration) {
        let mut reader = self.queue.reader();
        let mut pending: Option<disk::Record> = None;
        let mut caught_up = false;
        let mut last_tick = Instant::now();
        let mut doc = Vec::new();
        loop {
            let stopping = *stop.lock();
            match stopping {
                // Bulks still in flight at the deadline are abandoned (their
                // acks dropped without an answer): stop acknowledging just
                // before, so those records stay queued. A record answered in
                // the margin is delivered again after the restart (409).
                Some(deadline) if Instant::now() + SETTLE_MARGIN >= deadline => {}
                _ => self.settle(stopping.is_some()),
            }
            if let Some(deadline) = stopping {
                if Instant::now() + SETTLE_MARGIN >= deadline
                    || (caught_up && pending.is_none() && self.outstanding.is_empty())
                {
                    let report = self.output.close(deadline);
                    if report.undelivered > 0 {
                        tracing::warn!(
                            documents = report.undelivered,
                            "disk queue: documents in flight at the shutdown deadline stay queued and are delivered after the restart"
                        );
                    }
                    return;
                }
            }
            if pending.is_none() {
                match reader.next(flush_every.min(Duration::from_millis(20))) {
                    Ok(Some(r)) => {
                        pending = Some(r);
                        caught_up = false;
                    }
                    Ok(None) => caught_up = true,
                    Err(e) => {
                        tracing::error!(error = %e, "disk queue: cannot read; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            if let Some(rec) = pending.take() {
                match self.budget.try_acquire(rec.payload.len()) {
                    Some(permit) => self.deliver(rec, permit, &mut doc),
                    None => {
                        pending = Some(rec);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            self.queue.sync_due();
            if last_tick.elapsed() >= flush_every {
                last_tick = Instant::now();
                self.output.tick();
            }
        }
    }

    fn deliver(&mut self, rec: disk::Record, permit: Permit, doc: &mut Vec<u8>) {
        let ack = Arc::new(permit);
        let id = self.queue.id();
        for (i, d) in record::documents(&rec.payload).enumerate() {
            doc.clear();
            with_id(d, || document_id(id, rec.seq, i as u32), doc);
            self.output.append(doc, Arc::clone(&ack));
        }
        self.outstanding
            .push_back((rec.seq, rec.docs, Arc::downgrade(&ack)));
    }

    /// Acknowledges the records whose documents were all answered.
    fn settle(&mut self, now: bool) {
        while let Some((seq, docs, w)) = self.outstanding.front() {
            if w.strong_count() > 0 {
                break;
            }
            self.ack_to = Some(seq + 1);
            self.ack_docs += u64::from(*docs);
            self.outstanding.pop_front();
        }
        if let Some(seq) = self.ack_to {
            if now || self.last_ack.elapsed() >= ACK_EVERY {
                if let Err(e) = self.queue.ack(seq, self.ack_docs) {
                    tracing::error!(error = %e, "disk queue: cannot persist the acknowledged position; records may be delivered again after a restart");
                }
                self.ack_to = None;
                self.ack_docs = 0;
                self.last_ack = Instant::now();
            }
        }
    }
}
