//! The stage pipeline: stages joined by bounded crossbeam channels, each
//! stage a set of supervised threads ([`supervisor`]); the stages are one
//! table in [`topology::STAGES`], one file each under [`stages`]. The
//! picture, the module rules and the reasons are in docs/architecture.md.
//!
//! ```text
//! handler ─try_send─▶ decoder ×N ─▶ validator ×V ─▶ rate shard ×K ─▶ sourcemap ×M ─▶ aggregator ×A ─▶ indexer ×P ─▶ output
//!                                                    (outcome answered here)     (metrics, drop_unsampled)
//! ```
//!
//! Invariants:
//! * every channel is bounded; stage threads block on `send` (that is the
//!   back-pressure), HTTP handlers only `try_send` ([`Intake::try_send`]);
//! * a request has at most one [`Batch`] in the pipeline at a time, so its
//!   batches are processed in order and a terminal error stops the rest;
//! * each batch's [`Ticket`] is answered exactly once: either committed by
//!   the stage that decides its outcome, or cancelled by the handler when it
//!   gave up waiting (then the stages drop the batch, counted as rejected);
//! * accepted events are owed to the output: they are indexed or counted as
//!   failed, never dropped silently (see [`crate::telemetry`]).
//!
//! # Why the stages are not actix actors
//!
//! The HTTP layer runs on actix; the stages deliberately do not. We weighed
//! actix's `SyncArbiter` (a thread pool for one sync actor type) and
//! `Supervisor` (restarting async actors) against these threads:
//! * **bounded mailboxes with back-pressure**: a `SyncArbiter` feeds its
//!   threads from an unbounded queue, and a sync actor can pass a message on
//!   only with `do_send` (no capacity check), `try_send` (spin when full) or
//!   `send` (a future that completes once the unbounded queue took the
//!   message). Our stage threads block
//!   on a bounded `send`, so memory stays bounded by the profile;
//! * **CPU-bound work off the async executor**: decoding, encoding and bulk
//!   gzip never run on an actix/tokio worker (a `SyncArbiter` would give
//!   this too; async actors would not);
//! * **exact event accounting across panics**: the supervisor catches a panic
//!   per message, charges exactly the events that message carried (rejected
//!   or failed, by whether its outcome was committed), lets the instance
//!   settle what else it held ([`supervisor::Actor::after_panic`]) and
//!   rebuilds it. A panicking `SyncArbiter` actor ends its thread, and a
//!   `Supervisor` restart knows nothing of the lost message;
//! * **shutdown order**: the pipeline drains after the HTTP server stopped,
//!   outliving actix's `System`, on which a `SyncArbiter` depends.
//!
//! What actix would have given: one actor vocabulary for HTTP and pipeline,
//! typed addresses instead of channel senders, and request/response
//! messages, which [`Ticket`] and its oneshot reply stand in for.

pub mod stages;
pub mod supervisor;
pub mod topology;

use crate::auth::AuthResult;
use crate::budget::Permit;
use crate::model::{Event, Metadata, RequestBase};
use bytes::Bytes;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

pub use topology::{EventsHook, Intake, Pipeline, PipelineHooks, Resources, StartError};

/// What every batch of one request shares.
#[derive(Debug)]
pub struct RequestCtx {
    /// Request-derived event fields.
    pub base: RequestBase,
    /// Who is calling; the validator authorizes every event with it.
    pub auth: AuthResult,
    /// The rate-limit key (client IP) of an anonymous request; `None` = not limited.
    pub rate_key: Option<IpAddr>,
    /// Set by the decoder from the first batch's metadata line.
    pub metadata: OnceLock<Metadata>,
}

/// One raw ndjson line of a batch.
#[derive(Debug, Clone)]
pub enum RawLine {
    /// A complete line (without its `\n`), not yet decoded.
    Json(Bytes),
    /// A line over `max_event_size`: its first `max_event_size` bytes.
    TooLarge(Bytes),
    /// A whole OTLP protobuf message (a request has no metadata line then).
    Otlp(crate::model::otlp::Signal, Bytes),
}

/// A per-line error reported to the client: what was wrong (its `Display`
/// is the message) and the offending line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineErr {
    pub error: crate::model::LineError,
    pub document: Bytes,
}

/// An error that ends the request's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// The metadata line was invalid (400).
    Metadata { message: String, document: Bytes },
    /// An event was not authorized (403).
    Unauthorized(String),
    /// The rate limit ran out during the stream (429).
    RateLimited,
    /// A stage failed (500).
    Internal(String),
    /// The disk queue could not take the batch (503 "queue is full").
    QueueFull,
}

/// The answer to one batch.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events of this batch that were accepted.
    pub accepted: usize,
    /// Per-line errors of this batch, in line order.
    pub errors: Vec<LineErr>,
    pub terminal: Option<Terminal>,
}

const PENDING: u8 = 0;
const COMMITTED: u8 = 1;
const CANCELLED: u8 = 2;

/// The reply handle of a batch, travelling with it until its outcome is known.
#[derive(Debug)]
pub struct Ticket {
    state: Arc<AtomicU8>,
    reply: oneshot::Sender<Outcome>,
}

/// The handler's side of a [`Ticket`].
#[derive(Debug)]
pub struct TicketWatch {
    state: Arc<AtomicU8>,
    pub reply: oneshot::Receiver<Outcome>,
}

/// Creates a ticket and its watch.
pub fn ticket() -> (Ticket, TicketWatch) {
    let state = Arc::new(AtomicU8::new(PENDING));
    let (tx, rx) = oneshot::channel();
    (
        Ticket {
            state: Arc::clone(&state),
            reply: tx,
        },
        TicketWatch { state, reply: rx },
    )
}

impl Ticket {
    /// True once the handler gave up on this batch.
    pub fn cancelled(&self) -> bool {
        self.state.load(Ordering::Acquire) == CANCELLED
    }

    /// Decides the batch's outcome. Fails (returning the outcome) when the
    /// handler cancelled first; the caller must then drop the batch.
    pub fn commit(self, outcome: Outcome) -> Result<(), Outcome> {
        self.commit_then(outcome, || {})
    }

    /// Like [`Ticket::commit`], running `on_commit` once the outcome is
    /// decided but before the handler can see it, so counters it bumps are
    /// already up to date when the client gets its answer.
    pub fn commit_then(self, outcome: Outcome, on_commit: impl FnOnce()) -> Result<(), Outcome> {
        match self
            .state
            .compare_exchange(PENDING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                on_commit();
                // The handler may have gone (client disconnected); the outcome stands.
                let _ = self.reply.send(outcome);
                Ok(())
            }
            Err(_) => Err(outcome),
        }
    }
}

impl Ticket {
    /// Decides that the batch will be answered by this holder (the handler
    /// can no longer cancel it); false when the handler cancelled first.
    /// The answer follows with [`Ticket::answer`].
    pub fn claim(&self) -> bool {
        self.state
            .compare_exchange(PENDING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sends the outcome of a claimed ticket.
    pub fn answer(self, outcome: Outcome) {
        // The handler may have gone (client disconnected); the outcome stands.
        let _ = self.reply.send(outcome);
    }
}

impl TicketWatch {
    /// Gives up on the batch; true if the pipeline had not committed it yet.
    pub fn cancel(&self) -> bool {
        self.state
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Message into the decoder: raw lines of one request.
#[derive(Debug)]
pub struct Batch {
    pub req: Arc<RequestCtx>,
    /// The request's metadata line (first batch only).
    pub metadata_line: Option<Bytes>,
    pub lines: Vec<RawLine>,
    pub ticket: Ticket,
    pub permit: Permit,
}

/// Message between the later stages: decoded events of one batch.
#[derive(Debug)]
pub struct EventBatch {
    pub req: Arc<RequestCtx>,
    pub events: Vec<Event>,
    /// Per-line errors, reported with the outcome.
    pub errors: Vec<LineErr>,
    /// `Some` until the outcome is committed (by the rate stage).
    pub ticket: Option<Ticket>,
    /// Released when the last document of the batch is indexed or failed.
    pub permit: Arc<Permit>,
}

impl EventBatch {
    /// True when the handler gave up on this batch before its outcome was committed.
    pub fn cancelled(&self) -> bool {
        self.ticket.as_ref().is_some_and(|t| t.cancelled())
    }
}
