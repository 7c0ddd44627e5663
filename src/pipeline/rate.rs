//! Rate shard stage: the per-client-IP limiter of anonymous requests
//! (ratelimit.md), sharded by client IP, and the point where a batch's
//! outcome is decided: once a batch passes here it is accepted, its handler
//! is answered, and its events are owed to the output.
//!
//! Invariant: a shard never blocks on anything but its downstream `send`.

use super::supervisor::Actor;
use super::{EventBatch, Outcome};
use crate::telemetry::{reject, Telemetry};
use crossbeam_channel::Sender;
use std::sync::Arc;

pub struct RateShard {
    next: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
}

impl RateShard {
    pub fn new(next: Sender<EventBatch>, telemetry: Arc<Telemetry>) -> Self {
        RateShard { next, telemetry }
    }

    /// Commits the batch's outcome and forwards its events.
    fn accept(&mut self, mut eb: EventBatch) {
        let n = eb.events.len();
        if let Some(t) = eb.ticket.take() {
            let outcome = Outcome {
                accepted: n,
                errors: std::mem::take(&mut eb.errors),
                terminal: None,
            };
            if t.commit(outcome).is_err() {
                self.telemetry.reject(reject::QUEUE_FULL, n);
                return;
            }
            self.telemetry.events_accepted.inc_by(n as u64);
        }
        if let Err(e) = self.next.send(eb) {
            let lost = e.into_inner().events.len();
            self.telemetry.fail(crate::telemetry::fail::SHUTDOWN, lost);
        }
    }
}

impl Actor for RateShard {
    type Msg = EventBatch;

    fn handle(&mut self, eb: EventBatch) {
        self.accept(eb);
    }
}
