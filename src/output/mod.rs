//! Outputs: where encoded documents go. The indexer stage owns one
//! [`Output`] per instance, built by the configured [`OutputFactory`].
//!
//! Invariants every output keeps:
//! * every appended document ends either indexed (`telemetry.events_indexed`)
//!   or permanently failed (`telemetry.events_failed{reason}`, logged without
//!   its body); nothing is dropped silently;
//! * a document's [`Ack`] is dropped only once its fate is known, which
//!   releases the request bytes it holds in the memory budget;
//! * `append` may block the indexer thread when the destination is saturated:
//!   that is how back-pressure travels upstream to the intake.

pub mod console;
pub mod elasticsearch;
pub mod file;
pub mod ids;
pub mod kafka;
pub mod message;
pub mod redis;

pub use crate::budget::Ack;
use crate::telemetry::Telemetry;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("output i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("output configuration error: {0}")]
    Config(String),
}

/// What was left undelivered when an output closed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CloseReport {
    /// Documents neither indexed nor failed by the deadline (counted as failed, reason `shutdown`).
    pub undelivered: u64,
}

/// One output instance, driven by one indexer thread.
pub trait Output: Send {
    /// Appends one encoded document: the bulk action line and the source
    /// line, each ending with `\n`. May block while the destination is full.
    fn append(&mut self, doc: &[u8], ack: Ack);
    /// Called at least every [`OutputFactory::flush_interval`] and whenever
    /// the inbox is empty; flushes what is due.
    fn tick(&mut self);
    /// Flushes everything and waits for in-flight work until `deadline`.
    fn close(&mut self, deadline: Instant) -> CloseReport;
}

/// Builds output instances; shared by all indexer instances.
pub trait OutputFactory: Send + Sync {
    fn build(
        &self,
        instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Box<dyn Output>, OutputError>;
    /// How often idle indexers call [`Output::tick`].
    fn flush_interval(&self) -> Duration;
    /// Whether the destination is reachable (server info `publish_ready`).
    fn ready(&self) -> bool {
        true
    }
    /// Shutdown has begun: work blocked on the destination must give up by `deadline`.
    fn shutdown(&self, _deadline: Instant) {}
}

/// The output factory the configuration asks for: the one enabled output
/// (configuration validation refuses two), else the file sink.
pub fn from_config(cfg: &crate::config::Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    let on = cfg.enabled_outputs();
    if on.len() > 1 {
        return Err(OutputError::Config(format!(
            "only one output can be enabled, but output.{} and output.{} both are",
            on[0], on[1]
        )));
    }
    match on.first().copied() {
        Some("elasticsearch") => elasticsearch::factory(cfg),
        Some("kafka") => kafka::factory(cfg),
        Some("redis") => redis::factory(cfg),
        Some("console") => console::factory(cfg),
        _ => Ok(Arc::new(file::FileSinkFactory::new(&cfg.output.file)?)),
    }
}
