//! Console output (`output.console`), for debugging: each document as the
//! broker outputs send it (source document plus `@metadata`), one JSON
//! document per line on standard output, or indented with
//! `codec.json.pretty`. Logs go to standard error while it is on.
//!
//! Documents are buffered per indexer instance and written in one locked
//! write per batch (`bulk_max_size` documents, or every tick). A written
//! batch counts as indexed; a failed write (closed pipe) counts its
//! documents as failed (`io`). Writing blocks the indexer while standard
//! output is not read, which is back-pressure like any slow destination.

pub mod config;
pub mod request_builder;
pub mod service;

use super::{Ack, CloseReport, Output, OutputError, OutputFactory};
use crate::telemetry::{fail, Telemetry};
use config::ConsoleSettings;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds the console output factory from `output.console`.
pub fn factory(cfg: &crate::config::Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    let c = cfg
        .output
        .console
        .as_ref()
        .ok_or_else(|| OutputError::Config("output.console is not configured".into()))?;
    Ok(Arc::new(ConsoleFactory {
        settings: ConsoleSettings::from_config(c),
    }))
}

pub struct ConsoleFactory {
    settings: ConsoleSettings,
}

impl OutputFactory for ConsoleFactory {
    fn build(
        &self,
        _instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(Console {
            settings: self.settings.clone(),
            buf: Vec::new(),
            pending: Vec::new(),
            telemetry,
        }))
    }

    fn flush_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

struct Console {
    settings: ConsoleSettings,
    buf: Vec<u8>,
    pending: Vec<Ack>,
    telemetry: Arc<Telemetry>,
}

impl Console {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len();
        match service::write_batch(&self.buf) {
            Ok(()) => self.telemetry.events_indexed.inc_by(n as u64),
            Err(e) => {
                tracing::error!(documents = n, error = %e, "console output: write failed; documents counted as failed");
                self.telemetry.fail(fail::IO, n);
            }
        }
        self.buf.clear();
        self.pending.clear();
    }
}

impl Output for Console {
    fn append(&mut self, doc: &[u8], ack: Ack) {
        let before = self.buf.len();
        let version = crate::version::COMPAT_VERSION;
        if let Err(e) = request_builder::encode(doc, self.settings.pretty, version, &mut self.buf) {
            self.buf.truncate(before);
            tracing::error!(error = %e, "console output: document counted as failed");
            self.telemetry.fail(fail::REJECTED, 1);
            return;
        }
        self.pending.push(ack);
        if self.pending.len() >= self.settings.bulk_max_size {
            self.flush();
        }
    }

    fn tick(&mut self) {
        self.flush();
    }

    fn close(&mut self, _deadline: Instant) -> CloseReport {
        self.flush();
        CloseReport::default()
    }
}
