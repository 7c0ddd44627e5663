//! Stage actors and their supervision.
//!
//! Each stage instance is an OS thread that owns its actor state and takes
//! messages from the stage inbox one at a time. A panic while handling a
//! message is caught: it is logged and counted, the events of that message
//! are accounted for (rejected if their outcome was not committed yet, failed
//! otherwise), the instance is rebuilt from its factory, and the thread goes
//! on. A stage's threads exit once their inbox is closed and drained.

use crate::telemetry::{fail, reject, Telemetry};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stage instance's state and behaviour.
pub trait Actor: Send + 'static {
    type Msg: Message;
    /// Handles one message.
    fn handle(&mut self, msg: Self::Msg);
    /// Called when the inbox is empty (after a message, or after `idle` time).
    fn idle(&mut self) {}
    /// Called once, after the inbox is closed and drained.
    fn stop(&mut self) {}
    /// When the actor next needs [`Actor::idle`] called (deferred work), if ever.
    fn next_wake(&self) -> Option<Instant> {
        None
    }
}

/// What is lost if handling a message panics.
pub struct Loss {
    /// The message's outcome was already committed (events are owed to the output).
    pub committed: bool,
    /// Events the message carries.
    pub events: usize,
}

pub trait Message: Send + 'static {
    fn loss(&self) -> Loss;
}

/// Waits for a stage's threads to finish.
pub struct StageHandle {
    pub name: &'static str,
    done: crossbeam_channel::Receiver<()>,
}

impl StageHandle {
    /// True when every thread of the stage has exited before `deadline`.
    pub fn wait(&self, deadline: Instant) -> bool {
        matches!(
            self.done.recv_deadline(deadline),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Starts `instances` threads of a stage. `factory(i)` builds instance `i`'s
/// actor at start and again after a panic.
pub fn spawn<A, F>(
    name: &'static str,
    instances: usize,
    inbox: Receiver<A::Msg>,
    idle_every: Option<Duration>,
    telemetry: Arc<Telemetry>,
    factory: F,
) -> std::io::Result<StageHandle>
where
    A: Actor,
    F: Fn(usize) -> A + Send + Sync + 'static,
{
    let factory = Arc::new(factory);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    telemetry
        .stage_instances
        .with_label_values(&[name])
        .set(instances as i64);
    for i in 0..instances {
        let inbox = inbox.clone();
        let telemetry = Arc::clone(&telemetry);
        let factory = Arc::clone(&factory);
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                let _done = done;
                run(name, i, &inbox, idle_every, &telemetry, &*factory);
            })?;
    }
    Ok(StageHandle {
        name,
        done: done_rx,
    })
}

fn run<A: Actor>(
    name: &'static str,
    i: usize,
    inbox: &Receiver<A::Msg>,
    idle_every: Option<Duration>,
    telemetry: &Telemetry,
    factory: &(dyn Fn(usize) -> A + Send + Sync),
) {
    let mut actor = factory(i);
    let processed = telemetry.stage_processed.with_label_values(&[name]);
    let busy = telemetry.stage_busy_ns.with_label_values(&[name]);
    let panics = telemetry.stage_panics.with_label_values(&[name]);
    loop {
        let now = Instant::now();
        let deadline = match (idle_every.map(|d| now + d), actor.next_wake()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let msg = match deadline {
            Some(d) => match inbox.recv_deadline(d) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    if catch_unwind(AssertUnwindSafe(|| actor.idle())).is_err() {
                        panics.inc();
                        tracing::error!(
                            stage = name,
                            instance = i,
                            "stage idle handler panicked; restarting instance"
                        );
                        actor = factory(i);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match inbox.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        let loss = msg.loss();
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            actor.handle(msg);
            if inbox.is_empty() {
                actor.idle();
            }
        }));
        busy.inc_by(start.elapsed().as_nanos() as u64);
        processed.inc_by(loss.events as u64);
        if let Err(p) = result {
            panics.inc();
            tracing::error!(
                stage = name,
                instance = i,
                panic = %panic_text(&*p),
                events = loss.events,
                "stage actor panicked; its batch is accounted for and the instance restarted"
            );
            if loss.committed {
                telemetry.fail(fail::PANIC, loss.events);
            } else {
                telemetry.reject(reject::INTERNAL, loss.events);
            }
            actor = factory(i);
        }
    }
    if catch_unwind(AssertUnwindSafe(|| actor.stop())).is_err() {
        panics.inc();
        tracing::error!(stage = name, instance = i, "stage stop handler panicked");
    }
}
