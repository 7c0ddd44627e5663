//! Stage actors and their supervision.
//!
//! Each stage instance is an OS thread that owns its actor state and takes
//! messages from the stage inbox one at a time. A panic while handling a
//! message is caught: it is logged and counted, the events of that message
//! are accounted for (rejected if their outcome was not committed yet, failed
//! otherwise), the instance is rebuilt from its factory, and the thread goes
//! on. A stage's threads exit once their inbox is closed and drained.
//!
//! Invariants: a panic is charged only to what the panicking step held — a
//! panic in [`Actor::idle`] charges no message, and [`Actor::after_panic`]
//! lets the dying instance correct the message's [`Loss`] (events already
//! handed on are not lost) and account for what else it holds (parked
//! batches); so `received = rejected + accepted` and `accepted = indexed +
//! failed + discarded` survive every caught panic.

use crate::queue::dead_letter::panic_text;
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
    /// Called on an instance that panicked, just before it is replaced.
    /// `loss` is what the step in hand carried (the message's [`Loss`], or
    /// nothing for an idle step); returns what must be accounted for it,
    /// after settling anything else the instance held.
    fn after_panic(&mut self, loss: Loss) -> Loss {
        loss
    }
}

/// What is lost if handling a message panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    /// The message's outcome was already committed (events are owed to the output).
    pub committed: bool,
    /// Events the message carries.
    pub events: usize,
}

impl Loss {
    /// What a step that holds no message (an idle step) loses.
    pub const NOTHING: Loss = Loss {
        committed: true,
        events: 0,
    };
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
                        recover(name, i, &mut actor, Loss::NOTHING, None, telemetry, factory);
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
        let result = catch_unwind(AssertUnwindSafe(|| actor.handle(msg)));
        busy.inc_by(start.elapsed().as_nanos() as u64);
        processed.inc_by(loss.events as u64);
        if let Err(p) = result {
            recover(name, i, &mut actor, loss, Some(&*p), telemetry, factory);
            continue;
        }
        if inbox.is_empty() && catch_unwind(AssertUnwindSafe(|| actor.idle())).is_err() {
            recover(name, i, &mut actor, Loss::NOTHING, None, telemetry, factory);
        }
    }
    if catch_unwind(AssertUnwindSafe(|| actor.stop())).is_err() {
        telemetry.stage_panics.with_label_values(&[name]).inc();
        tracing::error!(stage = name, instance = i, "stage stop handler panicked");
    }
}

/// Settles a caught panic: counts it, accounts for what the instance held
/// ([`Actor::after_panic`]), and replaces the instance.
fn recover<A: Actor>(
    name: &'static str,
    i: usize,
    actor: &mut A,
    loss: Loss,
    panic: Option<&(dyn std::any::Any + Send)>,
    telemetry: &Telemetry,
    factory: &(dyn Fn(usize) -> A + Send + Sync),
) {
    telemetry.stage_panics.with_label_values(&[name]).inc();
    // The dying instance settles what it holds; if that panics too, the step's loss stands.
    let loss = catch_unwind(AssertUnwindSafe(|| actor.after_panic(loss))).unwrap_or(loss);
    tracing::error!(
        stage = name,
        instance = i,
        panic = %panic.map(panic_text).unwrap_or_else(|| "in idle step".into()),
        events = loss.events,
        "stage actor panicked; its events are accounted for and the instance restarted"
    );
    if loss.committed {
        telemetry.fail(fail::PANIC, loss.events);
    } else {
        telemetry.reject(reject::INTERNAL, loss.events);
    }
    *actor = factory(i);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `n` events, committed or not; `panic` makes `handle` panic.
    struct Msg {
        n: usize,
        committed: bool,
        panic: bool,
    }

    impl Message for Msg {
        fn loss(&self) -> Loss {
            Loss {
                committed: self.committed,
                events: self.n,
            }
        }
    }

    /// Panics in `idle` after every message when `idle_panics`; claims to
    /// have handed on `handed_on` events of a panicking message.
    struct Probe {
        idle_panics: bool,
        handed_on: usize,
    }

    impl Actor for Probe {
        type Msg = Msg;
        fn handle(&mut self, m: Msg) {
            if m.panic {
                panic!("handle");
            }
        }
        fn idle(&mut self) {
            if self.idle_panics {
                panic!("idle");
            }
        }
        fn after_panic(&mut self, loss: Loss) -> Loss {
            Loss {
                committed: loss.committed,
                events: loss.events.saturating_sub(self.handed_on),
            }
        }
    }

    fn run_stage(idle_panics: bool, handed_on: usize, msgs: Vec<Msg>) -> Arc<Telemetry> {
        let t = Arc::new(Telemetry::new());
        let (tx, rx) = crossbeam_channel::bounded(msgs.len().max(1));
        for m in msgs {
            tx.send(m).unwrap();
        }
        drop(tx);
        let h = spawn("probe", 1, rx, None, Arc::clone(&t), move |_| Probe {
            idle_panics,
            handed_on,
        })
        .unwrap();
        assert!(h.wait(Instant::now() + Duration::from_secs(5)));
        t
    }

    #[test]
    fn a_panic_in_the_idle_step_is_charged_to_no_message() {
        let t = run_stage(
            true,
            0,
            vec![Msg {
                n: 7,
                committed: true,
                panic: false,
            }],
        );
        assert_eq!(t.stage_panics.with_label_values(&["probe"]).get(), 1);
        let a = t.accounting();
        assert_eq!((a.rejected, a.failed), (0, 0), "{a:?}");
    }

    #[test]
    fn after_panic_corrects_the_loss() {
        let t = run_stage(
            false,
            3,
            vec![
                Msg {
                    n: 10,
                    committed: true,
                    panic: true,
                },
                Msg {
                    n: 4,
                    committed: false,
                    panic: true,
                },
            ],
        );
        assert_eq!(t.stage_panics.with_label_values(&["probe"]).get(), 2);
        let a = t.accounting();
        assert_eq!((a.failed, a.rejected), (7, 1), "{a:?}");
    }
}
