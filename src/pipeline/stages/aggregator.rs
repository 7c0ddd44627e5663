//! Aggregator stage: folds every accepted transaction and span into the
//! server-side metrics (`crate::aggregation`), then applies the
//! `drop_unsampled` filter, and hands the batch to the indexer. Harvested
//! metric documents go to the same indexer inbox, so they share its
//! bounds and back-pressure.
//!
//! The aggregation state is split into shards by service name; each shard
//! has its own mutex, held for one event at a time, so the stage's
//! instances (and services) do not contend. Windows are harvested by
//! whichever instance wakes first after an interval ended plus
//! `pipeline.aggregator.harvest_delay`, and all of them at shutdown
//! ([`Actor::stop`] runs after the inbox is drained).
//!
//! Invariants: every event is aggregated exactly once before it is
//! forwarded or discarded; produced documents are counted in
//! `aggregation_documents_total` when handed to the indexer (and then end
//! indexed or failed like events); unsampled non-RUM transactions end
//! counted as `discarded{unsampled}`.

use super::indexer::{Documents, ToIndex};
use crate::aggregation::{self, document::Writer, Shard, Window};
use crate::budget::MemoryBudget;
use crate::config::settings::Stage;
use crate::model::event::Body;
use crate::model::{EncodeContext, Event};
use crate::pipeline::supervisor::{Actor, Loss};
use crate::pipeline::topology::{StartError, Wiring};
use crate::pipeline::EventBatch;
use crate::telemetry::{fail, Telemetry};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The aggregation state shared by the stage's instances.
pub struct AggregationState {
    shards: Vec<Mutex<Shard>>,
    shared: aggregation::Shared,
    ctx: Arc<EncodeContext>,
    harvest_delay: Duration,
    /// Issues the acks of produced documents (they hold no request bytes).
    docs_budget: Arc<MemoryBudget>,
}

impl AggregationState {
    pub fn new(
        shards: usize,
        limits: aggregation::Limits,
        ctx: Arc<EncodeContext>,
        harvest_delay: Duration,
    ) -> Self {
        AggregationState {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            shared: aggregation::Shared::new(limits),
            ctx,
            harvest_delay,
            docs_budget: MemoryBudget::new(1),
        }
    }

    fn add(&self, ev: &Event, meta: Option<&crate::model::Metadata>, now_ns: i64) {
        let k = aggregation::shard_of(ev.service_name(), self.shards.len());
        self.shards[k].lock().add(ev, meta, now_ns, &self.shared);
    }

    /// (heap bytes, groups) of every open window.
    pub fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(b, g), s| {
            let s = s.lock();
            (b + s.heap_bytes(), g + s.groups())
        })
    }

    /// Takes the windows that ended before `cutoff_ns` (all with `None`),
    /// merging the `_other` services of windows that several shards opened.
    fn harvest(&self, cutoff_ns: Option<i64>) -> Vec<Window> {
        let mut merged: Vec<Window> = Vec::new();
        for s in &self.shards {
            for w in s.lock().harvest(cutoff_ns) {
                match merged
                    .iter_mut()
                    .find(|m| m.interval == w.interval && m.start_ns == w.start_ns)
                {
                    None => merged.push(w),
                    Some(m) => {
                        m.services.extend(w.services);
                        match (&mut m.overflow, w.overflow) {
                            (Some(into), Some(from)) => aggregation::merge_overflow(into, &from),
                            (slot @ None, from) => *slot = from,
                            (Some(_), None) => {}
                        }
                    }
                }
            }
        }
        merged
    }

    fn next_end_ns(&self) -> Option<i64> {
        self.shards.iter().filter_map(|s| s.lock().next_end()).min()
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The `drop_unsampled` filter: removes unsampled transactions of non-RUM
/// agents (apm-server aggregates them, then drops them); returns how many.
pub fn drop_unsampled(events: &mut Vec<Event>) -> usize {
    let before = events.len();
    events.retain(|ev| match &ev.body {
        Body::Transaction(t) => t.sampled || ev.is_rum_agent(),
        _ => true,
    });
    before - events.len()
}

/// Starts the aggregator instances in front of the indexer, sharing one
/// aggregation state (none when `pipeline.aggregator.enabled` is false: the
/// stage then only applies the unsampled filter).
/// The limits the aggregation model enforces, from `apm-server.aggregation.*`
/// (a service may use a tenth of each group limit, as apm-server).
fn limits(a: &crate::config::settings::Aggregation) -> aggregation::Limits {
    let per_service = |n: usize| (n / 10).max(1);
    aggregation::Limits {
        max_services: a.max_services,
        max_transaction_groups: a.transactions.max_groups,
        max_transaction_groups_per_service: per_service(a.transactions.max_groups),
        max_service_transaction_groups: a.service_transactions.max_groups,
        max_service_transaction_groups_per_service: per_service(a.service_transactions.max_groups),
        max_service_destination_groups: a.service_destinations.max_groups,
        max_service_destination_groups_per_service: per_service(a.service_destinations.max_groups),
    }
}

pub fn start(w: &mut Wiring<'_>, name: &'static str, sizing: Stage) -> Result<(), StartError> {
    let p = &w.cfg.pipeline.aggregator;
    let state = p.enabled.then(|| {
        Arc::new(AggregationState::new(
            p.shards,
            limits(&w.cfg.apm_server.aggregation),
            Arc::new(w.resources.encode_ctx.clone()),
            p.harvest_delay.get(),
        ))
    });
    let next = w.index_inbox()?;
    let telemetry = Arc::clone(w.telemetry);
    let shared = state.clone();
    let inbox = w.spawn(name, sizing, Some(Duration::from_secs(1)), move |_| {
        Aggregator::new(shared.clone(), next.clone(), Arc::clone(&telemetry))
    })?;
    w.set_aggregation(state);
    w.set_next(vec![inbox]);
    Ok(())
}

pub struct Aggregator {
    state: Option<Arc<AggregationState>>,
    next: Sender<ToIndex>,
    telemetry: Arc<Telemetry>,
    discarded: prometheus::IntCounter,
    /// Events of the batch in hand not yet forwarded or counted.
    in_hand: usize,
}

impl Aggregator {
    /// `state` is `None` when aggregation is off: batches then only pass
    /// through the unsampled filter.
    pub fn new(
        state: Option<Arc<AggregationState>>,
        next: Sender<ToIndex>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Aggregator {
            discarded: telemetry.events_discarded.with_label_values(&["unsampled"]),
            state,
            next,
            telemetry,
            in_hand: 0,
        }
    }

    fn harvest(&mut self, cutoff_ns: Option<i64>) {
        let Some(state) = &self.state else {
            return;
        };
        let windows = state.harvest(cutoff_ns);
        if windows.is_empty() {
            return;
        }
        let mut w = Writer::new(&state.ctx);
        for win in &windows {
            w.window(win);
        }
        drop(windows);
        let n = w.docs.len();
        if n == 0 {
            return;
        }
        for (metricset, k) in &w.per_metricset {
            self.telemetry
                .aggregation_documents
                .with_label_values(&[metricset])
                .inc_by(*k);
        }
        // A zero-byte permit: the output's ack type; never refused.
        let Some(ack) = state.docs_budget.try_acquire(0) else {
            tracing::error!(
                documents = n,
                "no ack for aggregated documents; counted as failed"
            );
            self.telemetry.fail(fail::SHUTDOWN, n);
            return;
        };
        let msg = ToIndex::Documents(Documents {
            docs: w.docs,
            ack: Arc::new(ack),
        });
        if self.next.send(msg).is_err() {
            self.telemetry.fail(fail::SHUTDOWN, n);
        }
    }
}

impl Actor for Aggregator {
    type Msg = EventBatch;

    fn handle(&mut self, mut eb: EventBatch) {
        self.in_hand = eb.events.len();
        if let Some(state) = &self.state {
            let now = now_ns();
            let meta = eb.req.metadata.get();
            for ev in &eb.events {
                state.add(ev, meta, now);
            }
        }
        // A batch whose outcome is still open (the disk queue answers after
        // its append) keeps its unsampled transactions: they must be counted
        // accepted with the batch first, and the indexer's encoder then
        // discards them (counted there).
        if eb.ticket.is_none() {
            let dropped = drop_unsampled(&mut eb.events);
            self.discarded.inc_by(dropped as u64);
        }
        self.in_hand = eb.events.len();
        if !eb.events.is_empty() || eb.ticket.is_some() {
            let n = eb.events.len();
            if self.next.send(ToIndex::Events(eb)).is_err() {
                self.telemetry.fail(fail::SHUTDOWN, n);
            }
        }
        self.in_hand = 0;
        self.idle();
    }

    fn idle(&mut self) {
        let due = self
            .state
            .as_ref()
            .map(|s| now_ns() - s.harvest_delay.as_nanos() as i64);
        if let Some(cutoff) = due {
            self.harvest(Some(cutoff));
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        let state = self.state.as_ref()?;
        let end = state.next_end_ns()?;
        let wait = end + state.harvest_delay.as_nanos() as i64 - now_ns();
        Some(Instant::now() + Duration::from_nanos(wait.max(0) as u64))
    }

    fn stop(&mut self) {
        self.harvest(None);
    }

    /// Events already forwarded or discarded are counted; only the rest of
    /// the batch is lost.
    fn after_panic(&mut self, loss: Loss) -> Loss {
        Loss {
            committed: loss.committed,
            events: std::mem::take(&mut self.in_hand),
        }
    }
}
