//! Bulk indexer stage: encodes each event straight into a bulk buffer
//! (action line + document) and hands it to the output instance it owns.
//!
//! Invariants: every event received here ends indexed, failed or discarded
//! (unsampled transactions) in the counters; a panic while encoding one
//! event fails only that event; the output is flushed at least every flush
//! interval and closed with the shutdown deadline.

use super::supervisor::Actor;
use super::EventBatch;
use crate::model::{encode, EncodeContext};
use crate::output::Output;
use crate::telemetry::{fail, Telemetry};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub struct Indexer {
    output: Box<dyn Output>,
    ctx: Arc<EncodeContext>,
    scratch: Vec<u8>,
    telemetry: Arc<Telemetry>,
    flush_every: Duration,
    last_tick: Instant,
    deadline: Arc<OnceLock<Instant>>,
}

impl Indexer {
    pub fn new(
        output: Box<dyn Output>,
        ctx: Arc<EncodeContext>,
        telemetry: Arc<Telemetry>,
        flush_every: Duration,
        deadline: Arc<OnceLock<Instant>>,
    ) -> Self {
        Indexer {
            output,
            ctx,
            scratch: Vec::with_capacity(4096),
            telemetry,
            flush_every,
            last_tick: Instant::now(),
            deadline,
        }
    }
}

impl Actor for Indexer {
    type Msg = EventBatch;

    fn handle(&mut self, eb: EventBatch) {
        let mut discarded = 0;
        for ev in &eb.events {
            self.scratch.clear();
            let scratch = &mut self.scratch;
            match catch_unwind(AssertUnwindSafe(|| encode(ev, &self.ctx, scratch))) {
                Ok(true) => self.output.append(&self.scratch, Arc::clone(&eb.permit)),
                Ok(false) => discarded += 1,
                Err(_) => {
                    tracing::error!("encoding an event panicked; the event is counted as failed");
                    self.telemetry.fail(fail::PANIC, 1);
                }
            }
        }
        if discarded > 0 {
            self.telemetry
                .events_discarded
                .with_label_values(&["unsampled"])
                .inc_by(discarded);
        }
        if self.last_tick.elapsed() >= self.flush_every {
            self.idle();
        }
    }

    fn idle(&mut self) {
        self.last_tick = Instant::now();
        self.output.tick();
    }

    fn stop(&mut self) {
        let deadline = self
            .deadline
            .get()
            .copied()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        let report = self.output.close(deadline);
        if report.undelivered > 0 {
            tracing::error!(
                documents = report.undelivered,
                "shutdown deadline passed before these documents were delivered; counted as failed"
            );
        }
    }
}
