//! Bulk indexer stage: encodes each event straight into a bulk buffer
//! (action line + document) and hands it to the output instance it owns.
//!
//! Its inbox carries both event batches and the aggregator's ready-made
//! metric documents ([`ToIndex`]).
//!
//! Invariants: every event or document received here ends indexed or
//! failed in the counters; a panic while encoding one event concerns only
//! that event: it is tried once more, and if it panics again it is buried in
//! the dead-letter file ([`crate::queue::dead_letter`]); the output is
//! flushed at least every flush interval and closed with the shutdown
//! deadline.
//!
//! With the disk queue, a batch arrives with its ticket still open: the
//! indexer encodes all of its events into one record, writes it to the log
//! (waiting for room while the handler still waits) and hands the answer to
//! the queue's group commit, which sends it once the record is synced; the
//! indexer goes on with the next batch meanwhile, so one sync covers the
//! records of many requests. The output is then fed by
//! [`crate::queue::Delivery`].

use crate::config::settings::Stage;
use crate::model::Event;
use crate::model::{encode, EncodeContext};
use crate::output::{Ack, Output};
use crate::pipeline::supervisor::{Actor, Loss, Message};
use crate::pipeline::topology::EventsHook;
use crate::pipeline::topology::{StartError, Wiring};
use crate::pipeline::{EventBatch, Outcome, Terminal, Ticket};
use crate::queue::dead_letter::{panic_text, DeadLetter};
use crate::queue::disk::{AppendError, DiskQueue};
use crate::telemetry::{reject, Telemetry};
use parking_lot::Mutex;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Builds one output per instance (so configuration errors surface at
/// start-up), then starts the indexers. An instance restarted after a panic
/// builds a new output, retrying every second until it can.
pub fn start(w: &mut Wiring<'_>, name: &'static str, sizing: Stage) -> Result<(), StartError> {
    let factory = Arc::clone(&w.resources.output);
    let telemetry = Arc::clone(w.telemetry);
    let mut first = Vec::with_capacity(sizing.instances);
    for i in 0..sizing.instances {
        first.push(Mutex::new(Some(factory.build(i, Arc::clone(&telemetry))?)));
    }
    let ctx = Arc::new(w.resources.encode_ctx.clone());
    let deadline = Arc::clone(w.deadline);
    let hook = w.resources.hooks.before_index.clone();
    let flush_every = factory.flush_interval();
    let queue = w.queue.clone();
    let dead_letter = Arc::clone(&w.dead_letter);
    let inbox = w.spawn(name, sizing, Some(flush_every), move |i| {
        let output = match first.get(i).and_then(|m| m.lock().take()) {
            Some(o) => o,
            None => loop {
                match factory.build(i, Arc::clone(&telemetry)) {
                    Ok(o) => break o,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot rebuild output; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            },
        };
        Indexer::new(
            output,
            Arc::clone(&ctx),
            Arc::clone(&telemetry),
            flush_every,
            Arc::clone(&deadline),
            Arc::clone(&dead_letter),
        )
        .with_hook(hook.clone())
        .with_queue(queue.clone())
    })?;
    w.set_index_inbox(inbox);
    Ok(())
}

/// Aggregated metric documents (bulk action line and source each), sharing one ack.
#[derive(Debug)]
pub struct Documents {
    pub docs: Vec<Vec<u8>>,
    pub ack: Ack,
}

/// What the indexer indexes.
#[derive(Debug)]
pub enum ToIndex {
    Events(EventBatch),
    Documents(Documents),
}

impl Message for ToIndex {
    fn loss(&self) -> Loss {
        match self {
            ToIndex::Events(eb) => eb.loss(),
            ToIndex::Documents(d) => Loss {
                committed: true,
                events: d.docs.len(),
            },
        }
    }
}

pub struct Indexer {
    output: Box<dyn Output>,
    ctx: Arc<EncodeContext>,
    scratch: Vec<u8>,
    telemetry: Arc<Telemetry>,
    flush_every: Duration,
    last_tick: Instant,
    deadline: Arc<OnceLock<Instant>>,
    discarded: prometheus::IntCounter,
    /// Events of the batch in hand not yet handed to the output or counted
    /// (what a panic now would lose).
    in_hand: usize,
    hook: Option<EventsHook>,
    queue: Option<Arc<DiskQueue>>,
    /// The record being built (disk queue).
    record: Vec<u8>,
    dead_letter: Arc<DeadLetter>,
}

/// What became of one event in the encoder.
enum Encoded {
    /// Its document is in the scratch buffer.
    Document,
    /// Not indexed by design (unsampled).
    Unsampled,
    /// It panicked twice and was buried (already counted).
    Buried,
}

impl Indexer {
    pub fn new(
        output: Box<dyn Output>,
        ctx: Arc<EncodeContext>,
        telemetry: Arc<Telemetry>,
        flush_every: Duration,
        deadline: Arc<OnceLock<Instant>>,
        dead_letter: Arc<DeadLetter>,
    ) -> Self {
        Indexer {
            dead_letter,
            discarded: telemetry.events_discarded.with_label_values(&["unsampled"]),
            in_hand: 0,
            hook: None,
            queue: None,
            record: Vec::new(),
            output,
            ctx,
            scratch: Vec::with_capacity(4096),
            telemetry,
            flush_every,
            last_tick: Instant::now(),
            deadline,
        }
    }
}

impl Indexer {
    /// Test seam: runs on each event before it is encoded.
    pub fn with_hook(mut self, hook: Option<EventsHook>) -> Self {
        self.hook = hook;
        self
    }

    /// Appends batches to the disk queue instead of the output.
    pub fn with_queue(mut self, queue: Option<Arc<DiskQueue>>) -> Self {
        self.queue = queue;
        self
    }

    /// Encodes the batch into one record, writes it to the log and has the
    /// request answered: 202 once the record is durable as the fsync policy
    /// says (by the queue's group commit); 503 "queue is full" when the
    /// handler gave up waiting for room or the write or sync failed (e.g. a
    /// full disk).
    fn append_to_queue(&mut self, queue: &DiskQueue, mut eb: EventBatch, ticket: Ticket) {
        let n = eb.events.len();
        self.in_hand = n;
        self.record.clear();
        let (mut docs, mut discarded, mut buried) = (0u32, 0u64, 0usize);
        for ev in &eb.events {
            match self.encode_or_bury(ev) {
                Encoded::Document => {
                    self.record.extend_from_slice(&self.scratch);
                    docs += 1;
                }
                Encoded::Unsampled => discarded += 1,
                Encoded::Buried => buried += 1,
            }
        }
        let written = if docs == 0 {
            if ticket.claim() {
                Ok(None)
            } else {
                Err(AppendError::Cancelled)
            }
        } else {
            queue
                .write_record(&self.record, docs, || ticket.cancelled(), || ticket.claim())
                .map(Some)
        };
        let errors = std::mem::take(&mut eb.errors);
        match written {
            Ok(generation) => {
                let telemetry = Arc::clone(&self.telemetry);
                let discarded_counter = self.discarded.clone();
                let answer = move |durable: Result<(), AppendError>| match durable {
                    Ok(()) => {
                        telemetry.events_accepted.inc_by((n - buried) as u64);
                        discarded_counter.inc_by(discarded);
                        ticket.answer(Outcome {
                            accepted: n,
                            errors,
                            terminal: None,
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = n, "cannot make the disk queue durable; the request is answered 503 queue is full");
                        telemetry.reject(reject::QUEUE_FULL, n - buried);
                        ticket.answer(Outcome {
                            accepted: 0,
                            errors,
                            terminal: Some(Terminal::QueueFull),
                        });
                    }
                };
                match generation {
                    Some(g) => queue.commit(g, Box::new(answer)),
                    None => answer(Ok(())),
                }
            }
            Err(AppendError::Cancelled) => self.telemetry.reject(reject::QUEUE_FULL, n - buried),
            Err(AppendError::Io(e)) => {
                tracing::error!(error = %e, events = n, "cannot append to the disk queue; the request is answered 503 queue is full");
                self.telemetry.reject(reject::QUEUE_FULL, n - buried);
                ticket.answer(Outcome {
                    accepted: 0,
                    errors,
                    terminal: Some(Terminal::QueueFull),
                });
            }
        }
        self.in_hand = 0;
    }

    /// Runs the hook and the encoder on one event into the scratch buffer.
    fn encode_once(&mut self, ev: &Event) -> Result<bool, String> {
        self.scratch.clear();
        let (hook, ctx, scratch) = (&self.hook, &self.ctx, &mut self.scratch);
        catch_unwind(AssertUnwindSafe(|| {
            if let Some(hook) = hook {
                hook(std::slice::from_ref(ev));
            }
            encode(ev, ctx, scratch)
        }))
        .map_err(|p| panic_text(&*p))
    }

    /// Encodes one event; an event that panics is tried once more, then
    /// buried in the dead-letter file. With the disk queue the event was not
    /// counted accepted yet: a buried one is counted accepted here (it is
    /// in the dead-letter file), the rest when the record is written.
    fn encode_or_bury(&mut self, ev: &Event) -> Encoded {
        let first = match self.encode_once(ev) {
            Ok(true) => return Encoded::Document,
            Ok(false) => return Encoded::Unsampled,
            Err(p) => p,
        };
        tracing::warn!(panic = %first, "encoding an event panicked; trying it once more");
        match self.encode_once(ev) {
            Ok(true) => Encoded::Document,
            Ok(false) => Encoded::Unsampled,
            Err(p) => {
                if self.queue.is_some() {
                    self.telemetry.events_accepted.inc();
                }
                let reason = format!("panic: {p}");
                self.dead_letter
                    .bury("indexer", &reason, ev, &self.ctx, &self.telemetry);
                Encoded::Buried
            }
        }
    }
}

impl Actor for Indexer {
    type Msg = ToIndex;

    /// Events already handed to the output are the output's to count; only
    /// the rest of the batch is lost. (The output itself is rebuilt; what it
    /// held is settled by its own drop.)
    fn after_panic(&mut self, loss: Loss) -> Loss {
        Loss {
            committed: loss.committed,
            events: std::mem::take(&mut self.in_hand),
        }
    }

    fn handle(&mut self, msg: ToIndex) {
        let eb = match msg {
            ToIndex::Events(mut eb) => {
                if let Some(queue) = self.queue.clone() {
                    if let Some(ticket) = eb.ticket.take() {
                        return self.append_to_queue(&queue, eb, ticket);
                    }
                }
                eb
            }
            ToIndex::Documents(d) => {
                self.in_hand = d.docs.len();
                for doc in &d.docs {
                    self.output.append(doc, Arc::clone(&d.ack));
                    self.in_hand -= 1;
                }
                if self.last_tick.elapsed() >= self.flush_every {
                    self.idle();
                }
                return;
            }
        };
        self.in_hand = eb.events.len();
        for ev in &eb.events {
            match self.encode_or_bury(ev) {
                Encoded::Document => self.output.append(&self.scratch, Arc::clone(&eb.permit)),
                Encoded::Unsampled => self.discarded.inc(),
                Encoded::Buried => {}
            }
            self.in_hand -= 1;
        }
        if self.last_tick.elapsed() >= self.flush_every {
            self.idle();
        }
    }

    fn idle(&mut self) {
        self.last_tick = Instant::now();
        self.output.tick();
    }

    fn stop(&mut self) {
        let deadline = self
            .deadline
            .get()
            .copied()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        let report = self.output.close(deadline);
        if report.undelivered > 0 {
            tracing::error!(
                documents = report.undelivered,
                "shutdown deadline passed before these documents were delivered; counted as failed"
            );
        }
    }
}
