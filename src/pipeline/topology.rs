//! The topology: one table of stages ([`STAGES`]), head to tail, and the
//! builder that starts them with the instance counts and inbox capacities of
//! the pipeline profile (`pipeline.<stage>.instances` / `.capacity`).
//!
//! Each row names a stage and the function (in the stage's own file under
//! [`super::stages`]) that starts it. Stages are started tail first, so each
//! is handed the inboxes of the stage after it through a [`Wiring`]; adding
//! a stage is one row here, its file, and its key in the profile.
//!
//! Shutdown closes the intake, then waits for each stage to drain in order;
//! the indexers close their outputs with the same deadline. After the
//! deadline and a short grace, anything still uncounted is booked
//! (rejected `shutting_down` / failed `shutdown`).
//!
//! Invariants: every inbox is bounded by its profile capacity; once
//! [`Pipeline::start`] returns, the only senders into a stage are held by
//! the stage before it (the head's by [`Intake`]), so closing the intake
//! drains and stops the stages in order.

use super::stages::aggregator::AggregationState;
use super::stages::indexer::ToIndex;
use super::stages::{aggregator, decoder, indexer, rate, sourcemap, validator};
use super::supervisor::{self, Actor, StageHandle};
use super::{Batch, EventBatch};
use crate::budget::MemoryBudget;
use crate::config::settings::{Pipeline as Profile, Stage};
use crate::config::Config;
use crate::model::{EncodeContext, Event};
use crate::output::{OutputError, OutputFactory};
use crate::queue::dead_letter::{self, DeadLetter};
use crate::queue::disk::{self, DiskQueue};
use crate::queue::Delivery;
use crate::ratelimit::RateLimiter;
use crate::sourcemap::Store;
use crate::telemetry::{fail, reject, Telemetry};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One row of the stage table.
pub struct StageDef {
    /// Thread names, metric labels and the profile key `pipeline.<name>`.
    pub name: &'static str,
    /// The stage's instance count and inbox capacity in the profile.
    pub sizing: fn(&Profile) -> Stage,
    /// Starts the stage's instances, wired to the inboxes of the stage after it.
    pub start: fn(&mut Wiring<'_>, &'static str, Stage) -> Result<(), StartError>,
}

/// Every stage, head to tail.
pub const STAGES: [StageDef; 6] = [
    StageDef {
        name: "decoder",
        sizing: |p| p.decoder,
        start: decoder::start,
    },
    StageDef {
        name: "validator",
        sizing: |p| p.validator,
        start: validator::start,
    },
    StageDef {
        name: "rate",
        sizing: |p| p.rate,
        start: rate::start,
    },
    StageDef {
        name: "sourcemap",
        sizing: |p| p.sourcemap,
        start: sourcemap::start,
    },
    StageDef {
        name: "aggregator",
        sizing: |p| Stage::new(p.aggregator.instances, p.aggregator.capacity),
        start: aggregator::start,
    },
    StageDef {
        name: "indexer",
        sizing: |p| p.indexer,
        start: indexer::start,
    },
];

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("cannot start stage threads: {0}")]
    Threads(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// What the server hands the pipeline: the output and the state the
/// pipeline shares with the HTTP layer.
pub struct Resources {
    pub output: Arc<dyn OutputFactory>,
    pub encode_ctx: EncodeContext,
    /// The per-IP limiter; the rate stage runs one instance per shard.
    pub limiter: Arc<RateLimiter>,
    /// The source-map store, when source mapping is on.
    pub sourcemaps: Option<Arc<Store>>,
    pub hooks: PipelineHooks,
}

/// What a stage's start function gets: the configuration, the shared
/// resources, and the inboxes of the stage after it.
pub struct Wiring<'a> {
    pub cfg: &'a Config,
    pub telemetry: &'a Arc<Telemetry>,
    pub resources: &'a Resources,
    /// Set at shutdown; the indexers close their outputs by it.
    pub deadline: &'a Arc<OnceLock<Instant>>,
    next: Vec<Sender<EventBatch>>,
    /// The indexer's inbox (events and the aggregator's documents).
    index_inbox: Option<Sender<ToIndex>>,
    /// The aggregation state, when aggregation is on (for the state gauges).
    aggregation: Option<Arc<AggregationState>>,
    /// The disk queue (`queue.type: disk`): the rate stage then leaves the
    /// outcome to the indexer, which answers after appending.
    pub queue: Option<Arc<DiskQueue>>,
    /// Where the sourcemap and indexer stages bury poison events.
    pub dead_letter: Arc<DeadLetter>,
    intake: Option<Sender<Batch>>,
    stages: Vec<StageHandle>,
    depth: Vec<(&'static str, Probe, usize)>,
}

impl Wiring<'_> {
    /// The inboxes of the stage after the one being started: one, or one per
    /// shard when that stage is sharded.
    pub fn next(&self) -> &[Sender<EventBatch>] {
        &self.next
    }

    /// The one inbox of the stage after the one being started.
    pub fn next_one(&self) -> Result<Sender<EventBatch>, StartError> {
        match self.next.as_slice() {
            [tx] => Ok(tx.clone()),
            other => Err(StartError::Config(format!(
                "stage expects one downstream inbox, found {}",
                other.len()
            ))),
        }
    }

    /// Starts `sizing.instances` instances of a stage sharing one inbox of
    /// `sizing.capacity`; `factory(i)` builds instance `i` (again after a
    /// panic). `idle_every` bounds how long an instance waits for a message
    /// before [`Actor::idle`] runs. Returns the inbox's sender.
    pub fn spawn<A, F>(
        &mut self,
        name: &'static str,
        sizing: Stage,
        idle_every: Option<Duration>,
        factory: F,
    ) -> Result<Sender<A::Msg>, StartError>
    where
        A: Actor,
        F: Fn(usize) -> A + Send + Sync + 'static,
    {
        let (tx, rx) = bounded::<A::Msg>(sizing.capacity);
        self.depth.push((name, probe(&rx), sizing.capacity));
        self.stages.push(supervisor::spawn(
            name,
            sizing.instances,
            rx,
            idle_every,
            Arc::clone(self.telemetry),
            factory,
        )?);
        Ok(tx)
    }

    /// Starts a sharded stage: `sizing.instances` instances, each with an
    /// inbox of its own of `sizing.capacity`; `factory(k)` builds shard `k`.
    /// Returns the inboxes' senders, indexed by shard.
    pub fn spawn_sharded<A, F>(
        &mut self,
        name: &'static str,
        sizing: Stage,
        factory: F,
    ) -> Result<Vec<Sender<A::Msg>>, StartError>
    where
        A: Actor,
        F: Fn(usize) -> A + Clone + Send + Sync + 'static,
    {
        let mut txs = Vec::with_capacity(sizing.instances);
        for k in 0..sizing.instances {
            let (tx, rx) = bounded::<A::Msg>(sizing.capacity);
            self.depth.push((name, probe(&rx), sizing.capacity));
            let f = factory.clone();
            self.stages.push(supervisor::spawn(
                name,
                1,
                rx,
                None,
                Arc::clone(self.telemetry),
                move |_| f(k),
            )?);
            txs.push(tx);
        }
        self.telemetry
            .stage_instances
            .with_label_values(&[name])
            .set(sizing.instances as i64);
        Ok(txs)
    }

    /// Makes `inboxes` what the next stage started (the one before) sends to.
    pub fn set_next(&mut self, inboxes: Vec<Sender<EventBatch>>) {
        self.next = inboxes;
    }

    /// Makes `inbox` the indexer's inbox, which the aggregator sends to.
    pub fn set_index_inbox(&mut self, inbox: Sender<ToIndex>) {
        self.index_inbox = Some(inbox);
    }

    /// The indexer's inbox (the indexer is started before the stages in front of it).
    pub fn index_inbox(&self) -> Result<Sender<ToIndex>, StartError> {
        self.index_inbox
            .clone()
            .ok_or_else(|| StartError::Config("the indexer must follow the aggregator".into()))
    }

    /// Records the aggregation state, whose size the pipeline reports.
    pub fn set_aggregation(&mut self, state: Option<Arc<AggregationState>>) {
        self.aggregation = state;
    }

    /// Makes `inbox` the pipeline's entry (the head stage's inbox).
    pub fn set_intake(&mut self, inbox: Sender<Batch>) {
        self.intake = Some(inbox);
    }
}

/// How long past the shutdown deadline stages may take to finish counting.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Code a test runs inside a stage on the events in hand.
pub type EventsHook = Arc<dyn Fn(&[Event]) + Send + Sync>;

/// Test seams: code run inside stages (e.g. to inject a panic). Construct
/// with `..Default::default()`: fields may be added.
#[derive(Clone, Default)]
pub struct PipelineHooks {
    /// Runs in the decoder after each batch is decoded (its events counted received).
    pub after_decode: Option<EventsHook>,
    /// Runs in the validator before a batch is authorized.
    pub before_validate: Option<EventsHook>,
    /// Runs in a rate shard before a batch is checked against the limiter.
    pub before_rate: Option<EventsHook>,
    /// Runs in the sourcemap applier before a batch is processed.
    pub before_sourcemap: Option<EventsHook>,
    /// Runs in the indexer before each event is encoded (one event at a time).
    pub before_index: Option<EventsHook>,
}

impl std::fmt::Debug for PipelineHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipelineHooks")
    }
}

/// Why a batch could not enter the pipeline.
pub enum EnqueueError {
    /// The decoder inbox is full.
    Full(Batch),
    /// The pipeline is shutting down.
    Closed(Batch),
}

/// The handlers' entry into the pipeline.
#[derive(Clone)]
pub struct Intake {
    tx: Arc<RwLock<Option<Sender<Batch>>>>,
}

impl Intake {
    /// Never blocks.
    pub fn try_send(&self, b: Batch) -> Result<(), EnqueueError> {
        match &*self.tx.read() {
            None => Err(EnqueueError::Closed(b)),
            Some(tx) => match tx.try_send(b) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(b)) => Err(EnqueueError::Full(b)),
                Err(TrySendError::Disconnected(b)) => Err(EnqueueError::Closed(b)),
            },
        }
    }

    fn close(&self) {
        self.tx.write().take();
    }
}

/// A running pipeline.
pub struct Pipeline {
    pub intake: Intake,
    pub budget: Arc<MemoryBudget>,
    stages: Vec<StageHandle>,
    deadline: Arc<OnceLock<Instant>>,
    telemetry: Arc<Telemetry>,
    output: Arc<dyn OutputFactory>,
    depth: Arc<DepthProbe>,
    aggregation: Option<Arc<AggregationState>>,
    /// The disk queue's reader into the output (`queue.type: disk`).
    delivery: parking_lot::Mutex<Option<Delivery>>,
    queue: Option<Arc<DiskQueue>>,
}

/// Opens the disk queue when `queue.type: disk`.
fn open_queue(cfg: &Config, telemetry: &Telemetry) -> Result<Option<Arc<DiskQueue>>, OutputError> {
    use crate::config::{FsyncPolicy, QueueType};
    if cfg.queue.kind != QueueType::Disk {
        return Ok(None);
    }
    let d = &cfg.queue.disk;
    let settings = disk::Settings {
        path: d.path.clone().into(),
        max_size: d.max_size.get(),
        segment_size: d.segment_size.get().max(1),
        fsync: match d.fsync {
            FsyncPolicy::Request => disk::Fsync::Request,
            FsyncPolicy::Interval => disk::Fsync::Interval(d.fsync_interval.get()),
        },
    };
    DiskQueue::open(settings, disk::Metrics::new(&telemetry.registry))
        .map(Some)
        .map_err(|e| OutputError::Config(e.to_string()))
}

/// Reads the current length of one inbox.
type Probe = Box<dyn Fn() -> usize + Send + Sync>;

struct DepthProbe {
    inboxes: Vec<(&'static str, Probe, usize)>,
}

fn probe<T: Send + 'static>(rx: &Receiver<T>) -> Probe {
    let rx = rx.clone();
    Box::new(move || rx.len())
}

impl Pipeline {
    /// Starts every stage of [`STAGES`], tail first.
    pub fn start(
        cfg: &Config,
        telemetry: Arc<Telemetry>,
        resources: Resources,
    ) -> Result<Pipeline, StartError> {
        let deadline: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
        let queue = open_queue(cfg, &telemetry)?;
        let dead_letter = Arc::new(DeadLetter::new(
            cfg.queue.dead_letter_path(),
            cfg.queue.dead_letter.max_size.get(),
            dead_letter::Metrics::new(&telemetry.registry),
        ));
        let mut w = Wiring {
            cfg,
            telemetry: &telemetry,
            resources: &resources,
            deadline: &deadline,
            next: Vec::new(),
            index_inbox: None,
            aggregation: None,
            queue: queue.clone(),
            dead_letter,
            intake: None,
            stages: Vec::new(),
            depth: Vec::new(),
        };
        for def in STAGES.iter().rev() {
            (def.start)(&mut w, def.name, (def.sizing)(&cfg.pipeline))?;
        }
        let Wiring {
            intake,
            mut stages,
            mut depth,
            next,
            index_inbox,
            aggregation,
            ..
        } = w;
        drop(next);
        drop(index_inbox);
        let intake =
            intake.ok_or_else(|| StartError::Config("no stage takes the intake".into()))?;
        stages.reverse(); // head first
        depth.reverse();

        let budget = MemoryBudget::new(cfg.pipeline.memory_budget.get() as usize);
        telemetry.memory_budget_limit.set(budget.limit() as i64);
        for (name, _, cap) in &depth {
            telemetry
                .stage_inbox_capacity
                .with_label_values(&[name])
                .set(*cap as i64);
        }
        let delivery = match &queue {
            Some(q) => Some(Delivery::start(
                Arc::clone(q),
                resources.output.as_ref(),
                cfg.pipeline.indexer.instances,
                &telemetry,
                budget.limit(),
            )?),
            None => None,
        };
        Ok(Pipeline {
            delivery: parking_lot::Mutex::new(delivery),
            queue,
            intake: Intake {
                tx: Arc::new(RwLock::new(Some(intake))),
            },
            budget,
            stages,
            deadline,
            telemetry,
            output: Arc::clone(&resources.output),
            depth: Arc::new(DepthProbe { inboxes: depth }),
            aggregation,
        })
    }

    /// Updates the inbox-depth and memory gauges (called before a scrape).
    pub fn sample_gauges(&self) {
        let mut sums: Vec<(&'static str, i64)> = Vec::new();
        for (name, len, _) in &self.depth.inboxes {
            let n = len() as i64;
            match sums.iter_mut().find(|(s, _)| s == name) {
                Some((_, v)) => *v += n,
                None => sums.push((name, n)),
            }
        }
        for (name, n) in sums {
            self.telemetry
                .stage_inbox_depth
                .with_label_values(&[name])
                .set(n);
        }
        self.telemetry
            .memory_budget_in_use
            .set(self.budget.in_use() as i64);
        if let Some(a) = &self.aggregation {
            let (bytes, groups) = a.size();
            self.telemetry.aggregation_state_bytes.set(bytes as i64);
            self.telemetry.aggregation_groups.set(groups as i64);
        }
    }

    /// Closes the intake and drains every stage until `deadline`.
    /// Returns true when everything drained in time.
    ///
    /// A stage that misses the deadline gets [`SHUTDOWN_GRACE`] more (an
    /// indexer closing its output at the deadline needs a moment to count
    /// what it abandons). Whatever is still uncounted after that is booked
    /// so the accounting identity holds at exit: events received but not yet
    /// answered as rejected (`shutting_down`), accepted events as failed
    /// (`shutdown`). Stage threads still stuck past that point are left to
    /// the process exit.
    pub fn shutdown(&self, deadline: Instant) -> bool {
        let _ = self.deadline.set(deadline);
        self.output.shutdown(deadline);
        self.intake.close();
        let mut ok = true;
        for st in &self.stages {
            if st.wait(deadline) {
                continue;
            }
            tracing::error!(
                stage = st.name,
                "stage did not drain before the shutdown deadline"
            );
            ok = false;
            if !st.wait(deadline + SHUTDOWN_GRACE) {
                break;
            }
        }
        if let Some(mut d) = self.delivery.lock().take() {
            d.stop(deadline);
        }
        let acc = self.telemetry.accounting();
        let unanswered = acc.received.saturating_sub(acc.rejected + acc.accepted);
        // With the disk queue, accepted events not yet delivered stay queued on disk.
        let in_flight = match &self.queue {
            Some(q) => {
                let queued = q.metrics().events.get();
                if queued > 0 {
                    tracing::info!(
                        events = queued,
                        "events stay queued on disk for the next start"
                    );
                }
                0
            }
            None => acc.in_flight().max(0) as usize,
        };
        if unanswered > 0 || in_flight > 0 {
            tracing::error!(
                unanswered,
                accepted = in_flight,
                "events not delivered at shutdown; counted as rejected (shutting_down) and failed (shutdown)"
            );
            ok = false;
            self.telemetry
                .reject(reject::SHUTTING_DOWN, unanswered as usize);
            self.telemetry.fail(fail::SHUTDOWN, in_flight);
        }
        ok
    }
}
