//! The topology builder: creates every stage inbox (bounded) and starts the
//! stage actors with the instance counts and capacities of the pipeline
//! profile, wiring decoder → validator → rate shards → sourcemap → indexer.
//!
//! Shutdown closes the intake, then waits for each stage to drain in order;
//! the indexers close their outputs with the same deadline. After the
//! deadline and a short grace, anything still uncounted is booked
//! (rejected `shutting_down` / failed `shutdown`).

use super::decoder::Decoder;
use super::indexer::Indexer;
use super::rate::{RateLimiter, RateShard};
use super::sourcemap::{RumProcessor, SourcemapApplier};
use super::supervisor::{self, StageHandle};
use super::validator::Validator;
use super::{budget::MemoryBudget, Batch, EventBatch};
use crate::config::Config;
use crate::model::{DecodeConfig, EncodeContext, Event};
use crate::output::{OutputError, OutputFactory};
use crate::queue::disk::{self, DiskQueue};
use crate::queue::Delivery;
use crate::telemetry::{fail, reject, Telemetry};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::RwLock;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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
    /// Per-IP token buckets of anonymous requests (shared with the HTTP layer).
    pub limiter: Arc<RateLimiter>,
    pub budget: Arc<MemoryBudget>,
    stages: Vec<StageHandle>,
    deadline: Arc<OnceLock<Instant>>,
    telemetry: Arc<Telemetry>,
    output: Arc<dyn OutputFactory>,
    depth: Arc<DepthProbe>,
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
    /// Builds and starts every stage.
    pub fn start(
        cfg: &Config,
        output: Arc<dyn OutputFactory>,
        telemetry: Arc<Telemetry>,
        hooks: PipelineHooks,
        encode_ctx: EncodeContext,
    ) -> Result<Pipeline, OutputError> {
        let p = &cfg.pipeline;
        let deadline: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());

        // Build the outputs first so configuration errors surface at start-up.
        let mut outputs = Vec::new();
        for i in 0..p.indexer.instances {
            outputs.push(parking_lot::Mutex::new(Some(
                output.build(i, Arc::clone(&telemetry))?,
            )));
        }
        let outputs = Arc::new(outputs);
        let queue = open_queue(cfg, &telemetry)?;

        let (idx_tx, idx_rx) = bounded::<EventBatch>(p.indexer.capacity);
        let (sm_tx, sm_rx) = bounded::<EventBatch>(p.sourcemap.capacity);
        let mut shard_txs = Vec::new();
        let mut shard_rxs = Vec::new();
        for _ in 0..p.rate.instances {
            let (tx, rx) = bounded::<EventBatch>(p.rate.capacity);
            shard_txs.push(tx);
            shard_rxs.push(rx);
        }
        let (val_tx, val_rx) = bounded::<EventBatch>(p.validator.capacity);
        let (dec_tx, dec_rx) = bounded::<Batch>(p.decoder.capacity);

        let mut depth = vec![
            ("decoder", probe(&dec_rx), p.decoder.capacity),
            ("validator", probe(&val_rx), p.validator.capacity),
        ];
        for rx in &shard_rxs {
            depth.push(("rate", probe(rx), p.rate.capacity));
        }
        depth.push(("sourcemap", probe(&sm_rx), p.sourcemap.capacity));
        depth.push(("indexer", probe(&idx_rx), p.indexer.capacity));

        let mut stages = Vec::new();
        let flush_every = output.flush_interval();
        {
            let (t, out, ctx, dl, factory, hook) = (
                Arc::clone(&telemetry),
                Arc::clone(&outputs),
                Arc::new(encode_ctx),
                Arc::clone(&deadline),
                Arc::clone(&output),
                hooks.before_index.clone(),
            );
            let queue = queue.clone();
            stages.push(supervisor::spawn(
                "indexer",
                p.indexer.instances,
                idx_rx,
                Some(flush_every),
                Arc::clone(&telemetry),
                move |i| {
                    // The first build was done above; later builds are restarts.
                    let o = out.get(i).and_then(|m| m.lock().take());
                    let o = match o {
                        Some(o) => o,
                        None => loop {
                            match factory.build(i, Arc::clone(&t)) {
                                Ok(o) => break o,
                                Err(e) => {
                                    tracing::error!(error = %e, "cannot rebuild output; retrying");
                                    std::thread::sleep(Duration::from_secs(1));
                                }
                            }
                        },
                    };
                    Indexer::new(
                        o,
                        Arc::clone(&ctx),
                        Arc::clone(&t),
                        flush_every,
                        Arc::clone(&dl),
                    )
                    .with_hook(hook.clone())
                    .with_queue(queue.clone())
                },
            )?);
        }
        {
            let t = Arc::clone(&telemetry);
            let hook = hooks.before_sourcemap.clone();
            let rum = Arc::new(
                RumProcessor::from_config(cfg, &telemetry)
                    .map_err(|e| OutputError::Config(format!("source mapping: {e}")))?,
            );
            stages.push(supervisor::spawn(
                "sourcemap",
                p.sourcemap.instances,
                sm_rx,
                None,
                Arc::clone(&telemetry),
                move |_| {
                    SourcemapApplier::new(idx_tx.clone(), Arc::clone(&t), Arc::clone(&rum))
                        .with_hook(hook.clone())
                },
            )?);
        }
        let rl = &cfg.apm_server.auth.anonymous.rate_limit;
        let limiter = Arc::new(
            RateLimiter::new(rl.ip_limit, rl.event_limit, p.rate.instances)
                .map_err(|e| OutputError::Config(e.to_string()))?,
        );
        for (k, rx) in shard_rxs.into_iter().enumerate() {
            let t = Arc::clone(&telemetry);
            let next = sm_tx.clone();
            let lim = Arc::clone(&limiter);
            let hook = hooks.before_rate.clone();
            let defer = queue.is_some();
            stages.push(supervisor::spawn(
                "rate",
                1,
                rx,
                None,
                Arc::clone(&telemetry),
                move |_| {
                    RateShard::new(k, Arc::clone(&lim), next.clone(), Arc::clone(&t))
                        .with_hook(hook.clone())
                        .with_deferred_commit(defer)
                },
            )?);
        }
        drop(sm_tx);
        telemetry
            .stage_instances
            .with_label_values(&["rate"])
            .set(p.rate.instances as i64);
        {
            let t = Arc::clone(&telemetry);
            let hook = hooks.before_validate.clone();
            stages.push(supervisor::spawn(
                "validator",
                p.validator.instances,
                val_rx,
                None,
                Arc::clone(&telemetry),
                move |i| {
                    Validator::new(shard_txs.clone(), i, Arc::clone(&t)).with_hook(hook.clone())
                },
            )?);
        }
        {
            let t = Arc::clone(&telemetry);
            let dcfg = DecodeConfig {
                default_service_environment: cfg.apm_server.default_service_environment.clone(),
            };
            let hooks = hooks.clone();
            stages.push(supervisor::spawn(
                "decoder",
                p.decoder.instances,
                dec_rx,
                None,
                Arc::clone(&telemetry),
                move |_| Decoder::new(dcfg.clone(), val_tx.clone(), Arc::clone(&t), hooks.clone()),
            )?);
        }
        stages.reverse(); // head first

        let budget = MemoryBudget::new(p.memory_budget.get() as usize);
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
                output.build(p.indexer.instances, Arc::clone(&telemetry))?,
                budget.limit(),
                flush_every,
            )?),
            None => None,
        };
        Ok(Pipeline {
            delivery: parking_lot::Mutex::new(delivery),
            queue,
            intake: Intake {
                tx: Arc::new(RwLock::new(Some(dec_tx))),
            },
            budget,
            limiter,
            stages,
            deadline,
            telemetry,
            output,
            depth: Arc::new(DepthProbe { inboxes: depth }),
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
