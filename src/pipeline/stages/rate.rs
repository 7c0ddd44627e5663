//! Rate stage: applies the per-client-IP limit of anonymous requests
//! ([`crate::ratelimit`]) to every batch, and is the point where a batch's
//! outcome is decided: once a batch passes here it is accepted, its handler
//! is answered, and its events are owed to the output.
//!
//! The stage runs one instance per limiter shard; the validator routes each
//! batch to the shard of its client IP ([`crate::ratelimit::shard_of`]), so
//! one IP's batches are serialized by one instance. A batch takes one token
//! per event and may have to wait up to
//! [`BATCH_MAX_WAIT`](crate::ratelimit::BATCH_MAX_WAIT) for them; past that
//! the request ends with 429.
//!
//! With the disk queue the commit moves to the indexer (after the append to
//! the log, see [`crate::queue`]): this stage then forwards accepted
//! batches with their ticket.
//!
//! Invariants: a shard never sleeps — a batch that must wait for tokens is
//! parked with its due time and released by the shard's own timer while it
//! keeps serving other IPs; a shard blocks only on its downstream `send`;
//! tokens of a batch that is not accepted after all are given back.

use crate::config::settings::Stage;
use crate::pipeline::supervisor::{Actor, Loss};
use crate::pipeline::topology::EventsHook;
use crate::pipeline::topology::{StartError, Wiring};
use crate::pipeline::{EventBatch, Outcome, Terminal};
use crate::ratelimit::{RateLimited, RateLimiter};
use crate::telemetry::{fail, reject, Telemetry};
use crossbeam_channel::Sender;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Starts one instance per limiter shard, each with an inbox of its own.
pub fn start(w: &mut Wiring<'_>, name: &'static str, sizing: Stage) -> Result<(), StartError> {
    let limiter = Arc::clone(&w.resources.limiter);
    if limiter.shards() != sizing.instances {
        return Err(StartError::Config(format!(
            "the rate limiter has {} shards but pipeline.rate.instances is {}",
            limiter.shards(),
            sizing.instances
        )));
    }
    let next = w.next_one()?;
    let telemetry = Arc::clone(w.telemetry);
    let hook = w.resources.hooks.before_rate.clone();
    let defer = w.queue.is_some();
    let shards = w.spawn_sharded(name, sizing, move |k| {
        RateShard::new(
            k,
            Arc::clone(&limiter),
            next.clone(),
            Arc::clone(&telemetry),
        )
        .with_hook(hook.clone())
        .with_deferred_commit(defer)
    })?;
    w.set_next(shards);
    Ok(())
}

struct Parked {
    due: Instant,
    seq: u64,
    ip: IpAddr,
    batch: EventBatch,
}

impl PartialEq for Parked {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Parked {}
impl PartialOrd for Parked {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Parked {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

pub struct RateShard {
    hook: Option<EventsHook>,
    shard: usize,
    limiter: Arc<RateLimiter>,
    parked: BinaryHeap<Reverse<Parked>>,
    seq: u64,
    next: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
    /// With the disk queue the outcome is committed by the indexer, after
    /// the batch is in the log; the ticket travels on.
    defer_commit: bool,
}

impl RateShard {
    pub fn new(
        shard: usize,
        limiter: Arc<RateLimiter>,
        next: Sender<EventBatch>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        RateShard {
            hook: None,
            shard,
            limiter,
            parked: BinaryHeap::new(),
            seq: 0,
            next,
            telemetry,
            defer_commit: false,
        }
    }

    /// Leaves the commit of accepted batches to a later stage (disk queue).
    pub fn with_deferred_commit(mut self, defer: bool) -> Self {
        self.defer_commit = defer;
        self
    }

    /// Test seam: runs on each batch before the limiter sees it.
    pub fn with_hook(mut self, hook: Option<EventsHook>) -> Self {
        self.hook = hook;
        self
    }

    /// Commits the batch's outcome and forwards its events.
    fn accept(&mut self, mut eb: EventBatch, reserved: Option<IpAddr>) {
        let n = eb.events.len();
        if self.defer_commit {
            if let Err(e) = self.next.send(eb) {
                let eb = e.into_inner();
                let n = eb.events.len();
                self.telemetry.reject(reject::SHUTTING_DOWN, n);
            }
            return;
        }
        if let Some(t) = eb.ticket.take() {
            let outcome = Outcome {
                accepted: n,
                errors: std::mem::take(&mut eb.errors),
                terminal: None,
            };
            let accepted = &self.telemetry.events_accepted;
            if t.commit_then(outcome, || accepted.inc_by(n as u64))
                .is_err()
            {
                if let Some(ip) = reserved {
                    self.limiter.cancel(self.shard, ip, n as u32);
                }
                self.telemetry.reject(reject::QUEUE_FULL, n);
                return;
            }
        }
        if let Err(e) = self.next.send(eb) {
            self.telemetry
                .fail(fail::SHUTDOWN, e.into_inner().events.len());
        }
    }

    fn release_due(&mut self, all: bool) {
        let now = Instant::now();
        while let Some(Reverse(p)) = self.parked.peek() {
            if !all && p.due > now {
                break;
            }
            if let Some(Reverse(p)) = self.parked.pop() {
                self.accept(p.batch, Some(p.ip));
            }
        }
    }
}

impl Actor for RateShard {
    type Msg = EventBatch;

    fn handle(&mut self, mut eb: EventBatch) {
        if let Some(hook) = &self.hook {
            hook(&eb.events);
        }
        let n = eb.events.len();
        if eb.cancelled() {
            self.telemetry.reject(reject::QUEUE_FULL, n);
            return;
        }
        match eb.req.rate_key {
            None => self.accept(eb, None),
            Some(ip) => {
                let now = Instant::now();
                match self.limiter.reserve(self.shard, ip, n as u32, now) {
                    Ok(wait) if wait.is_zero() => self.accept(eb, Some(ip)),
                    Ok(wait) => {
                        self.seq += 1;
                        self.parked.push(Reverse(Parked {
                            due: now + wait,
                            seq: self.seq,
                            ip,
                            batch: eb,
                        }));
                    }
                    Err(RateLimited) => {
                        self.telemetry.reject(reject::RATE_LIMITED, n);
                        if let Some(t) = eb.ticket.take() {
                            let _ = t.commit(Outcome {
                                accepted: 0,
                                errors: std::mem::take(&mut eb.errors),
                                terminal: Some(Terminal::RateLimited),
                            });
                        }
                    }
                }
            }
        }
        self.release_due(false);
    }

    fn idle(&mut self) {
        self.release_due(false);
    }

    fn next_wake(&self) -> Option<Instant> {
        self.parked.peek().map(|Reverse(p)| p.due)
    }

    fn stop(&mut self) {
        self.release_due(true);
    }

    /// The parked batches would die with this instance: their requests get a
    /// 500 and their events are rejected (`internal`), their tokens returned.
    fn after_panic(&mut self, loss: Loss) -> Loss {
        for Reverse(p) in std::mem::take(&mut self.parked).into_vec() {
            let mut eb = p.batch;
            let n = eb.events.len();
            self.limiter.cancel(self.shard, p.ip, n as u32);
            self.telemetry.reject(reject::INTERNAL, n);
            if let Some(t) = eb.ticket.take() {
                let _ = t.commit(Outcome {
                    accepted: 0,
                    errors: std::mem::take(&mut eb.errors),
                    terminal: Some(Terminal::Internal(
                        "rate limiter restarted after a panic".into(),
                    )),
                });
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthResult;
    use crate::budget::MemoryBudget;
    use crate::model::{DecodeConfig, Decoder, RequestBase};
    use crate::pipeline::{ticket, RequestCtx, TicketWatch};
    use std::sync::OnceLock;

    /// A batch of `n` error events from `ip`, and its handler's watch.
    fn batch(ip: IpAddr, n: usize) -> (EventBatch, TicketWatch) {
        let base = RequestBase::default();
        let mut d = Decoder::new(DecodeConfig::default());
        let meta = d
            .decode_metadata(
                br#"{"metadata":{"service":{"name":"web","agent":{"name":"rum-js","version":"5.0.0"}}}}"#,
                &base,
            )
            .unwrap();
        let mut events = Vec::new();
        for i in 0..n {
            let line = format!(
                r#"{{"error":{{"id":"{:016x}","exception":{{"message":"m","type":"E"}}}}}}"#,
                i + 1
            );
            d.decode_event(line.as_bytes(), &meta, &mut events).unwrap();
        }
        assert_eq!(events.len(), n);
        let req = Arc::new(RequestCtx {
            base,
            auth: AuthResult::none(),
            rate_key: Some(ip),
            metadata: OnceLock::new(),
        });
        let (t, w) = ticket();
        let permit = MemoryBudget::new(1 << 20).try_acquire(1).unwrap();
        let eb = EventBatch {
            req,
            events,
            errors: Vec::new(),
            ticket: Some(t),
            permit: Arc::new(permit),
        };
        (eb, w)
    }

    #[test]
    fn parked_batches_of_a_panicking_shard_are_answered_and_counted() {
        let t = Arc::new(Telemetry::new());
        // 10 events/s per IP, bursts of 30
        let lim = Arc::new(RateLimiter::new(100, 10, 1).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(10);
        let mut shard = RateShard::new(0, Arc::clone(&lim), tx, Arc::clone(&t));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (first, mut w1) = batch(ip, 30);
        shard.handle(first);
        assert_eq!(w1.reply.try_recv().unwrap().accepted, 30);
        let (second, mut w2) = batch(ip, 5);
        shard.handle(second);
        assert_eq!(shard.parked.len(), 1, "the second batch waits for tokens");
        let nothing = Loss {
            committed: false,
            events: 0,
        };
        assert_eq!(shard.after_panic(nothing), nothing);
        let o = w2.reply.try_recv().expect("the parked batch is answered");
        assert!(matches!(o.terminal, Some(Terminal::Internal(_))), "{o:?}");
        assert_eq!(o.accepted, 0);
        let a = t.accounting();
        assert_eq!((a.accepted, a.rejected), (30, 5), "{a:?}");
        assert_eq!(t.events_rejected.with_label_values(&["internal"]).get(), 5);
        assert_eq!(rx.len(), 1, "only the first batch went on");
    }
}
