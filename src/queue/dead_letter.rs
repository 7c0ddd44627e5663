//! The dead-letter file: where an accepted event goes when processing it
//! made a stage panic twice (in its batch or on its first try, then once
//! more alone), so a poison event is neither lost silently nor retried
//! forever.
//!
//! Format (ndjson, one line per event; docs/durability.md shows how to
//! replay it):
//!
//! ```text
//! {"time":"2026-01-02T03:04:05.678Z","stage":"indexer","reason":"…","action":{"create":{"_index":"…"}},"document":{…}}
//! ```
//!
//! `action` and `document` are the bulk action line and the source the
//! event would have been indexed as (without source mapping when the panic
//! was in the sourcemap stage). When the event cannot be encoded at all
//! (the encoder itself panics), they are absent and `event` holds a debug
//! rendering of the decoded event, for diagnosis only.
//!
//! Accounting: a buried event is counted `failed{dead_letter}`; one that
//! could not be written (file full, I/O error) is counted `failed{panic}`,
//! as before dead letters existed, plus `dead_letter_dropped_total`.
//!
//! Invariants: the file never exceeds `max_size` (a line that does not fit
//! is counted and logged, never waited for); every line is written whole
//! and synced before the event is counted; the file is opened on the first
//! letter, so a server that never buries anything creates nothing.

use crate::model::{encode, EncodeContext, Event};
use crate::telemetry::{fail, Telemetry};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The dead-letter file's counters (registered in the server's registry).
#[derive(Clone)]
pub struct Metrics {
    /// Events written to the file.
    pub events: IntCounter,
    /// Events that could not be written, by reason (`full`, `io`).
    pub dropped: IntCounterVec,
    /// Size of the file.
    pub bytes: IntGauge,
}

impl Metrics {
    pub fn new(reg: &Registry) -> Metrics {
        let events = IntCounter::new(
            "dead_letter_events_total",
            "Poison events written to the dead-letter file.",
        )
        .expect("static metric definition");
        let dropped = IntCounterVec::new(
            Opts::new(
                "dead_letter_dropped_total",
                "Poison events that could not be written to the dead-letter file, by reason (full, io).",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let bytes = IntGauge::new("dead_letter_bytes", "Size of the dead-letter file.")
            .expect("static metric definition");
        let _ = reg.register(Box::new(events.clone()));
        let _ = reg.register(Box::new(dropped.clone()));
        let _ = reg.register(Box::new(bytes.clone()));
        Metrics {
            events,
            dropped,
            bytes,
        }
    }
}

/// Why a letter was not written.
#[derive(Debug, thiserror::Error)]
pub enum BuryError {
    #[error("the dead-letter file is full ({max_size} bytes)")]
    Full { max_size: u64 },
    #[error("cannot write the dead-letter file: {0}")]
    Io(#[from] io::Error),
}

/// The open file and its size.
struct Open {
    file: File,
    size: u64,
}

/// A bounded, append-only dead-letter file shared by the stages.
pub struct DeadLetter {
    path: PathBuf,
    max_size: u64,
    file: Mutex<Option<Open>>,
    metrics: Metrics,
}

impl DeadLetter {
    pub fn new(path: PathBuf, max_size: u64, metrics: Metrics) -> DeadLetter {
        if let Ok(m) = std::fs::metadata(&path) {
            metrics.bytes.set(m.len() as i64);
        }
        DeadLetter {
            path,
            max_size,
            file: Mutex::new(None),
            metrics,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Writes a poison event and counts it: `failed{dead_letter}` when it
    /// is in the file, `failed{panic}` when it could not be written.
    /// `reason` says which stage panicked and why.
    pub fn bury(
        &self,
        stage: &str,
        reason: &str,
        ev: &Event,
        ctx: &EncodeContext,
        telemetry: &Telemetry,
    ) {
        let line = letter(stage, reason, ev, ctx);
        match self.append(line.as_bytes()) {
            Ok(()) => {
                tracing::error!(
                    stage,
                    reason,
                    path = %self.path.display(),
                    "an event made the stage panic twice; written to the dead-letter file"
                );
                self.metrics.events.inc();
                telemetry.fail(fail::DEAD_LETTER, 1);
            }
            Err(e) => {
                let label = match e {
                    BuryError::Full { .. } => "full",
                    BuryError::Io(_) => "io",
                };
                tracing::error!(
                    stage,
                    reason,
                    error = %e,
                    path = %self.path.display(),
                    "an event made the stage panic twice and cannot be dead-lettered; counted as failed (panic)"
                );
                self.metrics.dropped.with_label_values(&[label]).inc();
                telemetry.fail(fail::PANIC, 1);
            }
        }
    }

    /// Appends one whole line and syncs it, unless it would pass `max_size`.
    fn append(&self, line: &[u8]) -> Result<(), BuryError> {
        let mut guard = self.file.lock();
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            let size = file.metadata()?.len();
            *guard = Some(Open { file, size });
        }
        let Some(open) = guard.as_mut() else {
            return Err(BuryError::Io(io::Error::other("dead-letter file not open")));
        };
        if open.size + line.len() as u64 > self.max_size {
            return Err(BuryError::Full {
                max_size: self.max_size,
            });
        }
        if let Err(e) = open
            .file
            .write_all(line)
            .and_then(|_| open.file.sync_data())
        {
            // A partial line would break the ndjson: cut it off again.
            let _ = open.file.set_len(open.size);
            return Err(e.into());
        }
        open.size += line.len() as u64;
        self.metrics.bytes.set(open.size as i64);
        Ok(())
    }
}

/// One line of the file for `ev`.
fn letter(stage: &str, reason: &str, ev: &Event, ctx: &EncodeContext) -> String {
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut line = format!(
        "{{\"time\":{},\"stage\":{},\"reason\":{}",
        quote(&time),
        quote(stage),
        quote(reason)
    );
    let mut doc = Vec::new();
    let encoded = catch_unwind(AssertUnwindSafe(|| encode(ev, ctx, &mut doc))).unwrap_or(false);
    let parts = encoded
        .then(|| std::str::from_utf8(&doc).ok())
        .flatten()
        .and_then(|s| s.trim_end_matches('\n').split_once('\n'));
    match parts {
        Some((action, source)) => {
            line.push_str(",\"action\":");
            line.push_str(action);
            line.push_str(",\"document\":");
            line.push_str(source);
        }
        None => {
            line.push_str(",\"event\":");
            line.push_str(&quote(&format!("{ev:?}")));
        }
    }
    line.push_str("}\n");
    line
}

/// The text of a caught panic.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(dir: &Path, max: u64) -> DeadLetter {
        DeadLetter::new(
            dir.join("sub").join("dead_letter.ndjson"),
            max,
            Metrics::new(&Registry::new()),
        )
    }

    #[test]
    fn lines_are_appended_whole_until_the_bound_then_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dl(dir.path(), 20);
        d.append(b"{\"a\":1}\n").unwrap();
        d.append(b"{\"b\":2}\n").unwrap();
        assert!(matches!(
            d.append(b"{\"c\":3}\n"),
            Err(BuryError::Full { max_size: 20 })
        ));
        let text = std::fs::read_to_string(d.path()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(d.metrics().bytes.get(), 16);
    }

    #[test]
    fn an_existing_file_counts_toward_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/dead_letter.ndjson"), [b'x'; 15]).unwrap();
        let d = dl(dir.path(), 20);
        assert_eq!(d.metrics().bytes.get(), 15);
        assert!(d.append(b"{\"a\":1}\n").is_err());
    }
}
