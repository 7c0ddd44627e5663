//! The bulk buffer: documents appended one by one, gzip-compressed on the fly
//! (the uncompressed bulk never exists in memory when compression is on), and
//! the subset body built when some documents of a bulk must be resent.
//!
//! Invariants: `offsets[i]` is the end, in the uncompressed stream, of
//! document `i` (action line + source line), so any subset of documents can
//! be cut out of the decompressed body; `acks[i]` belongs to document `i`;
//! with `idempotent_ids` each action line of a non-time-series document
//! carries an `_id` chosen at append time ([`crate::output::ids`]), so
//! every resend of a document repeats the same id.

use crate::output::{ids, Ack};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::{Read, Write};
use std::time::Instant;

/// Why a document could not be added or a body rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("document does not end with a newline-terminated source line")]
    Malformed,
    #[error("bulk body i/o: {0}")]
    Io(#[from] std::io::Error),
}

enum Sink {
    Plain(Vec<u8>),
    // Boxed: the zlib-rs encoder state is large, and one buffer exists per indexer.
    Gzip(Box<GzEncoder<Vec<u8>>>),
}

impl Sink {
    fn new(level: u32, capacity: usize) -> Sink {
        if level == 0 {
            Sink::Plain(Vec::with_capacity(capacity))
        } else {
            Sink::Gzip(Box::new(GzEncoder::new(
                Vec::with_capacity(capacity / 4),
                Compression::new(level),
            )))
        }
    }
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Plain(v) => {
                v.extend_from_slice(b);
                Ok(())
            }
            Sink::Gzip(g) => g.write_all(b),
        }
    }
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Sink::Plain(v) => Ok(v),
            Sink::Gzip(g) => g.finish(),
        }
    }
}

/// A finished bulk: the request body plus what is needed to resend parts of it.
pub struct BulkBody {
    /// The request body (gzip when `gzip`); cheap to clone for each attempt.
    pub bytes: bytes::Bytes,
    pub gzip: bool,
    level: u32,
    /// End offset of each document in the uncompressed stream.
    offsets: Vec<usize>,
    /// One ack per document.
    pub acks: Vec<Ack>,
}

impl BulkBody {
    pub fn docs(&self) -> usize {
        self.acks.len()
    }

    /// Uncompressed size.
    pub fn raw_len(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// A new body holding only the documents at `keep` (ascending), with their acks.
    /// The documents not kept keep their acks in `self` (dropped with it).
    pub fn subset(&mut self, keep: &[usize]) -> Result<BulkBody, BuildError> {
        let raw = if self.gzip {
            let mut out = Vec::with_capacity(self.raw_len());
            flate2::read::GzDecoder::new(&self.bytes[..]).read_to_end(&mut out)?;
            out
        } else {
            self.bytes.to_vec()
        };
        let mut sink = Sink::new(self.level, 0);
        let mut offsets = Vec::with_capacity(keep.len());
        let mut acks = Vec::with_capacity(keep.len());
        let mut len = 0;
        let mut old_acks: Vec<Option<Ack>> = std::mem::take(&mut self.acks)
            .into_iter()
            .map(Some)
            .collect();
        for &i in keep {
            let start = if i == 0 { 0 } else { self.offsets[i - 1] };
            let end = self.offsets[i];
            let doc = raw.get(start..end).ok_or(BuildError::Malformed)?;
            sink.write_all(doc)?;
            len += doc.len();
            offsets.push(len);
            if let Some(a) = old_acks.get_mut(i).and_then(Option::take) {
                acks.push(a);
            }
        }
        // acks of documents not kept are released here
        drop(old_acks);
        self.offsets.clear();
        Ok(BulkBody {
            bytes: sink.finish()?.into(),
            gzip: self.gzip,
            level: self.level,
            offsets,
            acks,
        })
    }
}

/// The bulk being filled by one indexer instance.
pub struct BulkBuffer {
    level: u32,
    capacity: usize,
    sink: Option<Sink>,
    offsets: Vec<usize>,
    acks: Vec<Ack>,
    raw_len: usize,
    started: Option<Instant>,
    /// Give documents an `_id` (`idempotent_ids`).
    ids: bool,
    /// The document with its `_id`, reused for every document.
    scratch: Vec<u8>,
}

impl BulkBuffer {
    pub fn new(level: u32, capacity: usize, idempotent_ids: bool) -> Self {
        BulkBuffer {
            level,
            capacity,
            sink: None,
            offsets: Vec::new(),
            acks: Vec::new(),
            raw_len: 0,
            started: None,
            ids: idempotent_ids,
            scratch: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    pub fn docs(&self) -> usize {
        self.acks.len()
    }

    /// Uncompressed bytes appended so far.
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// When the first document of this bulk was appended.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Appends one document (`action\nsource\n`). On error the document is
    /// not in the buffer and its ack is handed back.
    pub fn push(&mut self, doc: &[u8], ack: Ack) -> Result<(), (BuildError, Ack)> {
        let Some(nl) = doc.iter().position(|&b| b == b'\n') else {
            return Err((BuildError::Malformed, ack));
        };
        if doc.len() <= nl + 1 || doc.last() != Some(&b'\n') {
            return Err((BuildError::Malformed, ack));
        }
        let (level, capacity) = (self.level, self.capacity);
        let sink = self.sink.get_or_insert_with(|| Sink::new(level, capacity));
        let written = if self.ids {
            self.scratch.clear();
            ids::with_id(doc, ids::next_process_id, &mut self.scratch);
            sink.write_all(&self.scratch).map(|()| self.scratch.len())
        } else {
            sink.write_all(doc).map(|()| doc.len())
        };
        match written {
            Ok(n) => {
                self.raw_len += n;
                self.offsets.push(self.raw_len);
                self.acks.push(ack);
                if self.started.is_none() {
                    self.started = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) => Err((BuildError::Io(e), ack)),
        }
    }

    /// Takes the bulk out of the buffer, leaving it empty. `Err` gives back the acks.
    pub fn take(&mut self) -> Result<Option<BulkBody>, (BuildError, Vec<Ack>)> {
        let acks = std::mem::take(&mut self.acks);
        let offsets = std::mem::take(&mut self.offsets);
        self.raw_len = 0;
        self.started = None;
        let Some(sink) = self.sink.take() else {
            return Ok(None);
        };
        if acks.is_empty() {
            return Ok(None);
        }
        match sink.finish() {
            Ok(bytes) => Ok(Some(BulkBody {
                bytes: bytes.into(),
                gzip: self.level > 0,
                level: self.level,
                offsets,
                acks,
            })),
            Err(e) => Err((BuildError::Io(e), acks)),
        }
    }
}
