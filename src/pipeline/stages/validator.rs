//! Allow-list validator stage: authorizes every event of a batch for event
//! ingest with the request's [`AuthResult`](crate::auth::AuthResult)
//! (anonymous allow lists on `agent.name` / `service.name`, API-key
//! `event:write`), then routes the batch to its rate shard.
//!
//! The first denied event rejects the whole batch with a terminal 403;
//! batches accepted earlier stay accepted (their 202s are already counted),
//! as in apm-server.

use crate::auth::{Action, Resource};
use crate::config::settings::Stage;
use crate::pipeline::supervisor::{Actor, Loss, Message};
use crate::pipeline::topology::EventsHook;
use crate::pipeline::topology::{StartError, Wiring};
use crate::pipeline::{EventBatch, Outcome, Terminal};
use crate::telemetry::{reject, Telemetry};
use crossbeam_channel::Sender;
use std::sync::Arc;

/// Starts the validators, sending to every rate shard.
pub fn start(w: &mut Wiring<'_>, name: &'static str, sizing: Stage) -> Result<(), StartError> {
    let shards = w.next().to_vec();
    let telemetry = Arc::clone(w.telemetry);
    let hook = w.resources.hooks.before_validate.clone();
    let inbox = w.spawn(name, sizing, None, move |i| {
        Validator::new(shards.clone(), i, Arc::clone(&telemetry)).with_hook(hook.clone())
    })?;
    w.set_next(vec![inbox]);
    Ok(())
}

impl Message for EventBatch {
    fn loss(&self) -> Loss {
        Loss {
            committed: self.ticket.is_none(),
            events: self.events.len(),
        }
    }
}

pub struct Validator {
    hook: Option<EventsHook>,
    shards: Vec<Sender<EventBatch>>,
    next_shard: usize,
    telemetry: Arc<Telemetry>,
}

impl Validator {
    pub fn new(
        shards: Vec<Sender<EventBatch>>,
        instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        Validator {
            hook: None,
            next_shard: instance,
            shards,
            telemetry,
        }
    }
}

impl Validator {
    /// Test seam: runs on each batch before it is authorized.
    pub fn with_hook(mut self, hook: Option<EventsHook>) -> Self {
        self.hook = hook;
        self
    }
}

impl Actor for Validator {
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
        let denied = eb.events.iter().find_map(|ev| {
            eb.req
                .auth
                .authorize(
                    Action::EventIngest,
                    &Resource {
                        agent_name: Some(ev.agent_name()),
                        service_name: Some(ev.service_name()),
                    },
                )
                .err()
        });
        if let Some(denied) = denied {
            self.telemetry.reject(reject::UNAUTHORIZED, n);
            if let Some(t) = eb.ticket.take() {
                let _ = t.commit(Outcome {
                    accepted: 0,
                    errors: std::mem::take(&mut eb.errors),
                    terminal: Some(Terminal::Unauthorized(denied.0)),
                });
            }
            return;
        }
        let shard = match eb.req.rate_key {
            Some(ip) => crate::ratelimit::shard_of(&ip, self.shards.len()),
            None => {
                self.next_shard = (self.next_shard + 1) % self.shards.len();
                self.next_shard
            }
        };
        if let Err(e) = self.shards[shard].send(eb) {
            self.telemetry
                .reject(reject::SHUTTING_DOWN, e.into_inner().events.len());
        }
    }
}
