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
use crate::output::{Output, OutputError, OutputFactory};
use crate::telemetry::Telemetry;
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
    /// Starts delivering from the acknowledged position into output
    /// instance `instance` of `factory`. At most `memory` bytes of records
    /// are held by the output at a time.
    pub fn start(
        queue: Arc<DiskQueue>,
        factory: &dyn OutputFactory,
        instance: usize,
        telemetry: &Telemetry,
        memory: usize,
    ) -> Result<Delivery, OutputError> {
        let view = Arc::new(telemetry.for_disk_queue_delivery());
        let output = factory.build(instance, Arc::clone(&view))?;
        let flush_every = factory.flush_interval();
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
                    telemetry: view,
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

/// A record handed to the output.
struct Outstanding {
    seq: u64,
    docs: u32,
    /// Its documents' shared ack (gone once every document was answered).
    ack: Weak<Permit>,
    /// Every document was answered (seen before any abandonment).
    answered: bool,
}

struct Run {
    queue: Arc<DiskQueue>,
    output: Box<dyn Output>,
    budget: Arc<MemoryBudget>,
    /// Records handed to the output, oldest first.
    outstanding: VecDeque<Outstanding>,
    /// The view the output counts through (what it abandons stays queued).
    telemetry: Arc<Telemetry>,
    ack_to: Option<u64>,
    ack_docs: u64,
    last_ack: Instant,
}

/// How often the acknowledged position is written.
const ACK_EVERY: Duration = Duration::from_millis(100);

impl Run {
    fn go(&mut self, stop: &parking_lot::Mutex<Option<Instant>>, flush_every: Duration) {
        let mut reader = self.queue.reader();
        let mut pending: Option<disk::Record> = None;
        let mut caught_up = false;
        let mut last_tick = Instant::now();
        let mut doc = Vec::new();
        loop {
            let stopping = *stop.lock();
            self.settle(stopping.is_some());
            if let Some(deadline) = stopping {
                if Instant::now() >= deadline
                    || (caught_up && pending.is_none() && self.outstanding.is_empty())
                {
                    let report = self.output.close(deadline);
                    // What was answered up to the first abandonment is
                    // acknowledged; the abandoned records stay queued.
                    self.settle(true);
                    let behind: Vec<(u64, u32)> = (self.outstanding.iter())
                        .filter(|o| o.answered)
                        .map(|o| (o.seq, o.docs))
                        .collect();
                    if let Err(e) = self.queue.record_delivered(&behind) {
                        tracing::error!(error = %e, records = behind.len(), "disk queue: cannot record the delivered records; they are delivered again after the restart");
                    }
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
        self.outstanding.push_back(Outstanding {
            seq: rec.seq,
            docs: rec.docs,
            ack: Arc::downgrade(&ack),
            answered: false,
        });
    }

    /// Acknowledges the records whose documents were all answered.
    ///
    /// At the shutdown deadline the output abandons the bulks still in
    /// flight, dropping their acks without an answer; it counts them (in
    /// the view's `stayed_queued`) before it drops them. So once the output
    /// abandoned anything, a dropped ack no longer proves an answer and
    /// nothing more is acknowledged: those records stay queued for the next
    /// run. Records answered before that are acknowledged, so their events
    /// are not delivered (and counted) a second time after the restart.
    fn settle(&mut self, now: bool) {
        let done: Vec<usize> = (self.outstanding.iter().enumerate())
            .filter(|(_, o)| !o.answered && o.ack.strong_count() == 0)
            .map(|(i, _)| i)
            .collect();
        // Pairs with the releases of the acks' drops: an abandonment counted
        // before one of the drops just seen is visible below.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        if self.telemetry.stayed_queued() == 0 {
            for i in done {
                self.outstanding[i].answered = true;
            }
        }
        while let Some(o) = self.outstanding.front().filter(|o| o.answered) {
            self.ack_to = Some(o.seq + 1);
            self.ack_docs += u64::from(o.docs);
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
