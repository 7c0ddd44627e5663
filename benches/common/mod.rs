//! What the in-process server benches share: an output that only counts the
//! documents (and their bytes) it is given and acknowledges each at once, so
//! a measurement ends when every event has been encoded and handed over.

use apm_rs::output::{Ack, CloseReport, Output, OutputError, OutputFactory};
use apm_rs::telemetry::Telemetry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Documents and bytes seen by every [`CountingOutput`] of a server.
#[derive(Default)]
pub struct Counter {
    pub docs: AtomicU64,
    pub bytes: AtomicU64,
}

impl Counter {
    /// Documents seen so far.
    pub fn docs(&self) -> u64 {
        self.docs.load(Ordering::Relaxed)
    }

    /// Returns once `want` documents have been seen.
    pub fn wait_for(&self, want: u64) {
        while self.docs() < want {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Builds one [`CountingOutput`] per indexer, all counting into one [`Counter`].
pub struct CountingFactory(pub Arc<Counter>);

pub struct CountingOutput(Arc<Counter>, Arc<Telemetry>);

impl OutputFactory for CountingFactory {
    fn build(&self, _i: usize, t: Arc<Telemetry>) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(CountingOutput(Arc::clone(&self.0), t)))
    }
    fn flush_interval(&self) -> Duration {
        Duration::from_millis(100)
    }
}

impl Output for CountingOutput {
    fn append(&mut self, doc: &[u8], ack: Ack) {
        self.0.bytes.fetch_add(doc.len() as u64, Ordering::Relaxed);
        self.0.docs.fetch_add(1, Ordering::Relaxed);
        self.1.events_indexed.inc();
        drop(ack);
    }
    fn tick(&mut self) {}
    fn close(&mut self, _deadline: Instant) -> CloseReport {
        CloseReport::default()
    }
}
