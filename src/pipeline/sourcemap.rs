//! Sourcemap applier stage: un-minifies the stack frames of RUM errors and
//! spans (sourcemap.md). Pass-through until source mapping is implemented.

use super::supervisor::Actor;
use super::EventBatch;
use crate::telemetry::{fail, Telemetry};
use crossbeam_channel::Sender;
use std::sync::Arc;

pub struct SourcemapApplier {
    next: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
}

impl SourcemapApplier {
    pub fn new(next: Sender<EventBatch>, telemetry: Arc<Telemetry>) -> Self {
        SourcemapApplier { next, telemetry }
    }
}

impl Actor for SourcemapApplier {
    type Msg = EventBatch;

    fn handle(&mut self, eb: EventBatch) {
        if let Err(e) = self.next.send(eb) {
            self.telemetry
                .fail(fail::SHUTDOWN, e.into_inner().events.len());
        }
    }
}
