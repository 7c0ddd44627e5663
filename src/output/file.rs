//! The file sink, the embedded default output: bulk-format ndjson files
//! (action line + document line per event) under `output.file.path`.
//!
//! Each indexer instance writes its own file series
//! `apm-rs-<start ms>-<instance>-<seq>.ndjson`, rotated after
//! `output.file.rotate_bytes`. Documents count as indexed once the buffered
//! writer has handed them to the operating system (on `tick` or rotation).

use super::{Ack, CloseReport, Output, OutputError, OutputFactory};
use crate::config::FileOutput;
use crate::telemetry::{fail, Telemetry};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct FileSinkFactory {
    dir: PathBuf,
    rotate_bytes: u64,
    started_ms: u128,
}

impl FileSinkFactory {
    pub fn new(cfg: &FileOutput) -> Result<Self, OutputError> {
        let dir = PathBuf::from(&cfg.path);
        std::fs::create_dir_all(&dir)?;
        Ok(FileSinkFactory {
            dir,
            rotate_bytes: cfg.rotate_bytes.get().max(1),
            started_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
        })
    }
}

impl OutputFactory for FileSinkFactory {
    fn build(
        &self,
        instance: usize,
        telemetry: Arc<Telemetry>,
    ) -> Result<Box<dyn Output>, OutputError> {
        let mut sink = FileSink {
            dir: self.dir.clone(),
            prefix: format!("apm-rs-{}-{}", self.started_ms, instance),
            seq: 0,
            rotate_bytes: self.rotate_bytes,
            writer: None,
            written: 0,
            pending: Vec::new(),
            telemetry,
        };
        sink.open_next()?;
        Ok(Box::new(sink))
    }

    fn flush_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

struct FileSink {
    dir: PathBuf,
    prefix: String,
    seq: u64,
    rotate_bytes: u64,
    writer: Option<BufWriter<File>>,
    written: u64,
    /// Acks of documents written to the buffer but not yet flushed.
    pending: Vec<Ack>,
    telemetry: Arc<Telemetry>,
}

impl FileSink {
    fn open_next(&mut self) -> Result<(), OutputError> {
        loop {
            let path = self
                .dir
                .join(format!("{}-{:05}.ndjson", self.prefix, self.seq));
            self.seq += 1;
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => {
                    self.writer = Some(BufWriter::with_capacity(256 * 1024, f));
                    self.written = 0;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let n = self.pending.len();
        let res = match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Err(std::io::Error::other("no open file")),
        };
        match res {
            Ok(()) => self.telemetry.events_indexed.inc_by(n as u64),
            Err(e) => {
                tracing::error!(documents = n, error = %e, "file sink: flush failed; documents counted as failed");
                self.telemetry.fail(fail::IO, n);
                self.writer = None;
            }
        }
        self.pending.clear();
    }
}

impl Output for FileSink {
    fn append(&mut self, doc: &[u8], ack: Ack) {
        if self.writer.is_none() {
            if let Err(e) = self.open_next() {
                tracing::error!(error = %e, "file sink: cannot open file; document counted as failed");
                self.telemetry.fail(fail::IO, 1);
                return;
            }
        }
        let Some(w) = self.writer.as_mut() else {
            self.telemetry.fail(fail::IO, 1);
            return;
        };
        if let Err(e) = w.write_all(doc) {
            tracing::error!(error = %e, "file sink: write failed; document counted as failed");
            self.telemetry.fail(fail::IO, 1);
            self.flush();
            self.writer = None;
            return;
        }
        self.pending.push(ack);
        self.written += doc.len() as u64;
        if self.written >= self.rotate_bytes {
            self.flush();
            if let Err(e) = self.open_next() {
                tracing::error!(error = %e, "file sink: cannot rotate");
                self.writer = None;
            }
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

impl Drop for FileSink {
    fn drop(&mut self) {
        self.flush();
    }
}
