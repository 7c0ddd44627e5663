//! An output for tests that hold the pipeline's end: its `append` blocks
//! while the gate is closed, so back-pressure can be driven to the client;
//! it counts the event documents (not aggregated ones) it was given.

use apm_rs::output::{Ack, CloseReport, Output, OutputError, OutputFactory};
use apm_rs::telemetry::Telemetry;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An output whose `append` blocks while the gate is closed.
#[derive(Default)]
pub struct Gate {
    pub open: Mutex<bool>,
    pub cv: Condvar,
    pub docs: Mutex<u64>,
}

pub struct GatedFactory(pub Arc<Gate>);
struct GatedOutput(Arc<Gate>, Arc<Telemetry>);

impl OutputFactory for GatedFactory {
    fn build(&self, _i: usize, t: Arc<Telemetry>) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(GatedOutput(Arc::clone(&self.0), t)))
    }
    fn flush_interval(&self) -> Duration {
        Duration::from_millis(50)
    }
}

impl Output for GatedOutput {
    fn append(&mut self, doc: &[u8], _ack: Ack) {
        let mut open = self.0.open.lock();
        while !*open {
            self.0.cv.wait(&mut open);
        }
        let action = doc.split(|b| *b == b'\n').next().unwrap_or_default();
        let index = serde_json::from_slice::<serde_json::Value>(action)
            .ok()
            .and_then(|a| a["create"]["_index"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if !super::is_aggregated_index(&index) {
            *self.0.docs.lock() += 1;
        }
        self.1.events_indexed.inc();
    }
    fn tick(&mut self) {}
    fn close(&mut self, _d: Instant) -> CloseReport {
        CloseReport::default()
    }
}
