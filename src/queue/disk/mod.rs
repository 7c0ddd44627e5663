//! The disk queue: an append-only log of accepted batches in segment files,
//! an acknowledged position, and the bound on its size.
//!
//! Writers (indexer threads) write one record per batch under a lock and
//! then have it made durable: with `fsync: request` the group-commit thread
//! runs one `fdatasync` for every record written while the previous sync
//! ran and then calls each record's callback (which answers its request),
//! so writers never wait for a sync; with `fsync: interval` at most every
//! `fsync_interval`. [`DiskQueue::append`] is the blocking form of both. One
//! [`Reader`] reads records in order. Acknowledging a sequence number
//! persists it in the `ack` file (write + rename) and deletes the segments
//! entirely before it; a lost ack update only means some records are read
//! again after a restart (their documents carry fixed ids, so Elasticsearch
//! answers 409 and nothing is duplicated).
//!
//! Invariants: the bytes of all segments stay at or below `max_size`
//! (a single record larger than that is admitted into an empty queue);
//! a writer waits for room and gives up only when its caller says so, so
//! nothing accepted is ever dropped for lack of room; a failed write
//! (e.g. ENOSPC) is cut back off the segment, leaving no partial record;
//! a directory is used by one process at a time (an exclusive file lock).

pub mod record;
pub mod recovery;
pub mod segment;

use parking_lot::{Condvar, Mutex};
use prometheus::{IntCounter, IntGauge, Registry};
use recovery::{Next, Report};
use segment::Segment;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before the request is answered.
    Request,
    /// At most this long after the append.
    Interval(Duration),
}

/// The settings of one disk queue.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: PathBuf,
    pub max_size: u64,
    pub segment_size: u64,
    pub fsync: Fsync,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The caller gave up while waiting for room, or did not claim the write.
    #[error("the batch was given up before it was written")]
    Cancelled,
    #[error("disk queue write failed: {0}")]
    Io(#[from] io::Error),
}

/// Why the queue could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("disk queue {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("disk queue {0} is in use by another process")]
    Locked(PathBuf),
}

/// The queue's gauges and counters (registered in the server's registry).
#[derive(Clone)]
pub struct Metrics {
    pub bytes: IntGauge,
    pub max_bytes: IntGauge,
    pub events: IntGauge,
    pub replayed: IntCounter,
    pub corrupt_regions: IntCounter,
    pub unreadable_bytes: IntCounter,
    pub write_errors: IntCounter,
}

impl Metrics {
    pub fn new(reg: &Registry) -> Metrics {
        let gauge = |n: &str, h: &str| {
            let g = IntGauge::new(n, h).expect("static metric definition");
            let _ = reg.register(Box::new(g.clone()));
            g
        };
        let counter = |n: &str, h: &str| {
            let c = IntCounter::new(n, h).expect("static metric definition");
            let _ = reg.register(Box::new(c.clone()));
            c
        };
        Metrics {
            bytes: gauge(
                "queue_disk_bytes",
                "Bytes of the disk queue's segment files.",
            ),
            max_bytes: gauge("queue_disk_max_bytes", "queue.disk.max_size."),
            events: gauge(
                "queue_events",
                "Accepted events held by the disk queue and not yet acknowledged by the output.",
            ),
            replayed: counter(
                "queue_replayed_events_total",
                "Events found unacknowledged in the disk queue at start-up (delivered again).",
            ),
            corrupt_regions: counter(
                "queue_corrupt_regions_total",
                "Regions of the disk queue skipped because they failed their checksum.",
            ),
            unreadable_bytes: counter(
                "queue_unreadable_bytes_total",
                "Bytes of the disk queue that held no readable record (corruption, torn tails).",
            ),
            write_errors: counter(
                "queue_write_errors_total",
                "Failed writes to the disk queue (e.g. disk full).",
            ),
        }
    }
}

struct Writer {
    file: Arc<File>,
    active: Segment,
    active_len: u64,
    /// Sealed segments with their lengths, oldest first (not the active one).
    sealed: VecDeque<(Segment, u64)>,
    bytes: u64,
    next_seq: u64,
    /// First sequence number not yet acknowledged.
    acked: u64,
    /// Records written (the durability generation).
    written: u64,
    scratch: Vec<u8>,
}

struct Synced {
    generation: u64,
    at: Instant,
}

/// What runs once an appended record is durable, or could not be made so.
pub type Committed = Box<dyn FnOnce(Result<(), AppendError>) + Send>;

/// Records written and waiting for the group commit (`fsync: request`):
/// their durability generation and what to run once it is synced.
#[derive(Default)]
struct Commits {
    pending: Mutex<Vec<(u64, Committed)>>,
    ready: Condvar,
}

/// The group-commit thread: one `fdatasync` for every record written
/// while the previous one ran, then their callbacks (which answer the
/// requests). Ends once the queue is gone and nothing is pending.
fn group_commit(queue: std::sync::Weak<DiskQueue>, commits: Arc<Commits>) {
    loop {
        let batch = {
            let mut p = commits.pending.lock();
            while p.is_empty() {
                if queue.strong_count() == 0 {
                    return;
                }
                commits.ready.wait_for(&mut p, Duration::from_millis(100));
            }
            std::mem::take(&mut *p)
        };
        let upto = batch.iter().map(|(g, _)| *g).max().unwrap_or(0);
        let synced = match queue.upgrade() {
            Some(q) => q.sync(upto),
            None => Err(AppendError::Io(io::Error::other(
                "the disk queue was closed",
            ))),
        };
        for (_, then) in batch {
            then(match &synced {
                Ok(()) => Ok(()),
                Err(AppendError::Io(e)) => {
                    Err(AppendError::Io(io::Error::new(e.kind(), e.to_string())))
                }
                Err(AppendError::Cancelled) => Err(AppendError::Cancelled),
            });
        }
    }
}

/// An open disk queue.
pub struct DiskQueue {
    settings: Settings,
    id: u64,
    w: Mutex<Writer>,
    changed: Condvar,
    synced: Mutex<Synced>,
    commits: Arc<Commits>,
    metrics: Metrics,
    _lock: File,
    report: Report,
    /// Records after the acknowledged position that an earlier run
    /// delivered (the `delivered` file), with their documents: readers skip
    /// them.
    delivered: std::collections::HashMap<u64, u32>,
}

const ACK_FILE: &str = "ack";
const ID_FILE: &str = "queue.id";
const LOCK_FILE: &str = "lock";
const DELIVERED_FILE: &str = "delivered";

/// The `delivered` file: records answered by the output but not covered by
/// the acknowledged position at shutdown (an older record was still in
/// flight). Entries `seq u64 | docs u32`, then a CRC-32 of them, little
/// endian; an unreadable file means those records are delivered again
/// (409, no duplicate), never a loss.
fn read_delivered(dir: &Path) -> Vec<(u64, u32)> {
    let Ok(b) = std::fs::read(dir.join(DELIVERED_FILE)) else {
        return Vec::new();
    };
    let Some((entries, crc)) = b.split_last_chunk::<4>() else {
        return Vec::new();
    };
    if entries.len() % 12 != 0 || crc32fast::hash(entries) != u32::from_le_bytes(*crc) {
        tracing::warn!(
            "disk queue: the delivered file is corrupt; those records are delivered again"
        );
        return Vec::new();
    }
    entries
        .chunks_exact(12)
        .map(|e| {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&e[..8]);
            let mut docs = [0u8; 4];
            docs.copy_from_slice(&e[8..]);
            (u64::from_le_bytes(seq), u32::from_le_bytes(docs))
        })
        .collect()
}

fn read_ack(dir: &Path) -> u64 {
    let Ok(b) = std::fs::read(dir.join(ACK_FILE)) else {
        return 0;
    };
    let (Some(seq), Some(crc)) = (b.get(..8), b.get(8..12)) else {
        return 0;
    };
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(seq) != crc {
        tracing::warn!("disk queue ack file is corrupt; every record is delivered again");
        return 0;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(seq);
    u64::from_le_bytes(s)
}

/// Overwrites the 12 bytes of the ack file in place: no new block is
/// needed, so acknowledging (and then freeing segments) works on a full disk.
/// A torn update fails its checksum and means a replay, never a loss.
fn write_ack(dir: &Path, seq: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut b = seq.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(&seq.to_le_bytes()).to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(ACK_FILE))?;
    f.write_all_at(&b, 0)
}

/// The queue's stable id, created on first use.
fn queue_id(dir: &Path) -> io::Result<u64> {
    let p = dir.join(ID_FILE);
    if let Ok(s) = std::fs::read_to_string(&p) {
        if let Ok(id) = u64::from_str_radix(s.trim(), 16) {
            return Ok(id);
        }
        tracing::warn!(file = %p.display(), "disk queue id file unreadable; a new id is chosen");
    }
    let id: u64 = rand::random();
    let mut f = File::create(&p)?;
    f.write_all(format!("{id:016x}\n").as_bytes())?;
    f.sync_all()?;
    Ok(id)
}

impl DiskQueue {
    /// Opens (or creates) the queue in `settings.path`: locks the directory,
    /// scans the segments (counting and logging what cannot be read) and
    /// starts a new segment for appends.
    pub fn open(settings: Settings, metrics: Metrics) -> Result<Arc<DiskQueue>, OpenError> {
        let dir = settings.path.clone();
        let io_err = |source| OpenError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(io_err)?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked(dir));
        }
        let id = queue_id(&dir).map_err(io_err)?;
        let acked = read_ack(&dir);
        // The ack file exists from the start, so later updates need no new space.
        write_ack(&dir, acked).map_err(io_err)?;
        let mut segments = segment::list(&dir).map_err(io_err)?;
        // Segments wholly before the acknowledged position are done.
        while segments.len() > 1 && segments[1].first <= acked {
            let s = segments.remove(0);
            std::fs::remove_file(&s.path).map_err(io_err)?;
        }
        let mut report = recovery::scan(&segments, acked).map_err(io_err)?;
        let delivered: Vec<(u64, u32)> = read_delivered(&dir)
            .into_iter()
            .filter(|(seq, _)| *seq >= acked)
            .collect();
        for (_, docs) in &delivered {
            report.pending_records = report.pending_records.saturating_sub(1);
            report.pending_docs = report.pending_docs.saturating_sub(u64::from(*docs));
        }
        if report.corrupt_regions > 0 || report.unreadable_bytes > 0 {
            tracing::error!(
                corrupt_regions = report.corrupt_regions,
                unreadable_bytes = report.unreadable_bytes,
                "disk queue: some records could not be read (checksum failed or write torn); they are skipped"
            );
        }
        if report.pending_docs > 0 {
            tracing::info!(
                events = report.pending_docs,
                records = report.pending_records,
                "disk queue: unacknowledged events found at start-up; delivering them again"
            );
        }
        metrics.corrupt_regions.inc_by(report.corrupt_regions);
        metrics.unreadable_bytes.inc_by(report.unreadable_bytes);
        metrics.replayed.inc_by(report.pending_docs);
        metrics.events.set(report.pending_docs as i64);
        metrics.max_bytes.set(settings.max_size as i64);
        let next_seq = report.last_seq.map_or(acked, |s| (s + 1).max(acked));
        let mut sealed = VecDeque::new();
        for s in segments {
            let len = std::fs::metadata(&s.path).map_err(io_err)?.len();
            sealed.push_back((s, len));
        }
        let active = Segment::at(&dir, next_seq);
        let file = match active.create() {
            Ok(f) => f,
            // An empty segment left by a run that wrote nothing to it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                sealed.retain(|(s, _)| s.first != next_seq);
                std::fs::OpenOptions::new()
                    .append(true)
                    .read(true)
                    .open(&active.path)
                    .map_err(io_err)?
            }
            Err(e) => return Err(io_err(e)),
        };
        let active_len = file.metadata().map_err(io_err)?.len();
        let bytes = sealed.iter().map(|(_, l)| l).sum::<u64>() + active_len;
        metrics.bytes.set(bytes as i64);
        let commits = Arc::new(Commits::default());
        let queue = Arc::new(DiskQueue {
            commits: Arc::clone(&commits),
            w: Mutex::new(Writer {
                file: Arc::new(file),
                active,
                active_len,
                sealed,
                bytes,
                next_seq,
                acked,
                written: 0,
                scratch: Vec::new(),
            }),
            changed: Condvar::new(),
            synced: Mutex::new(Synced {
                generation: 0,
                at: Instant::now(),
            }),
            settings,
            id,
            metrics,
            _lock: lock,
            report,
            delivered: delivered.into_iter().collect(),
        });
        let weak = Arc::downgrade(&queue);
        std::thread::Builder::new()
            .name("queue-commit".into())
            .spawn(move || group_commit(weak, commits))
            .map_err(io_err)?;
        Ok(queue)
    }

    /// The stable id of this queue (part of every document id it assigns).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the start-up scan found.
    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Appends one record of `docs` documents and makes it durable as the
    /// fsync policy says. Waits while the queue is full, asking `give_up`
    /// every few milliseconds; once there is room, `claim` is called under
    /// the write lock and the record is written only if it returns true (the
    /// caller's commitment that the batch is accepted).
    pub fn append(
        &self,
        payload: &[u8],
        docs: u32,
        give_up: impl Fn() -> bool,
        claim: impl FnOnce() -> bool,
    ) -> Result<(), AppendError> {
        let generation = self.write_record(payload, docs, give_up, claim)?;
        self.sync(generation)
    }

    /// Runs `then` once the record of durability `generation` (from
    /// [`DiskQueue::write_record`]) is durable as the policy says: with
    /// `fsync: request` on the group-commit thread, after one sync shared
    /// with every record written meanwhile (so the writer goes on with its
    /// next record instead of waiting); with `interval` at once.
    pub fn commit(&self, generation: u64, then: Committed) {
        match self.settings.fsync {
            Fsync::Request => {
                self.commits.pending.lock().push((generation, then));
                self.commits.ready.notify_one();
            }
            Fsync::Interval(_) => then(self.sync(generation)),
        }
    }

    /// Waits for room like [`DiskQueue::append`], writes the record (not
    /// yet durable) and returns its durability generation for
    /// [`DiskQueue::commit`].
    pub fn write_record(
        &self,
        payload: &[u8],
        docs: u32,
        give_up: impl Fn() -> bool,
        claim: impl FnOnce() -> bool,
    ) -> Result<u64, AppendError> {
        let mut w = self.w.lock();
        let len = (record::HEADER + payload.len()) as u64;
        while w.bytes > 0 && w.bytes + len > self.settings.max_size {
            if give_up() {
                return Err(AppendError::Cancelled);
            }
            self.changed.wait_for(&mut w, Duration::from_millis(10));
        }
        if !claim() {
            return Err(AppendError::Cancelled);
        }
        let generation = self.write(&mut w, payload, docs)?;
        drop(w);
        self.metrics.events.add(i64::from(docs));
        self.changed.notify_all();
        Ok(generation)
    }

    fn write(&self, w: &mut Writer, payload: &[u8], docs: u32) -> Result<u64, AppendError> {
        if w.active_len > 0 && w.active_len >= self.settings.segment_size {
            self.rotate(w)?;
        }
        let seq = w.next_seq;
        let mut buf = std::mem::take(&mut w.scratch);
        buf.clear();
        record::encode(seq, docs, payload, &mut buf);
        let r = (&*w.file).write_all(&buf);
        w.scratch = buf;
        if let Err(e) = r {
            self.metrics.write_errors.inc();
            // Leave no partial record behind; the write is answered as failed.
            if let Err(e2) = w.file.set_len(w.active_len) {
                tracing::error!(error = %e2, "disk queue: cannot cut back a failed write; the partial record is skipped on read");
            }
            return Err(AppendError::Io(e));
        }
        let len = (record::HEADER + payload.len()) as u64;
        w.active_len += len;
        w.bytes += len;
        w.next_seq += 1;
        w.written += 1;
        self.metrics.bytes.set(w.bytes as i64);
        Ok(w.written)
    }

    /// Seals the active segment (made durable first) and starts the next.
    fn rotate(&self, w: &mut Writer) -> io::Result<()> {
        w.file.sync_data()?;
        let next = Segment::at(&self.settings.path, w.next_seq);
        let file = next.create()?;
        let old = std::mem::replace(&mut w.active, next);
        w.sealed.push_back((old, w.active_len));
        w.file = Arc::new(file);
        w.active_len = 0;
        Ok(())
    }

    /// Makes records up to `generation` durable as the policy says.
    fn sync(&self, generation: u64) -> Result<(), AppendError> {
        let mut s = self.synced.lock();
        if s.generation >= generation {
            return Ok(());
        }
        if let Fsync::Interval(every) = self.settings.fsync {
            if s.at.elapsed() < every {
                return Ok(());
            }
        }
        let (file, upto) = {
            let w = self.w.lock();
            (Arc::clone(&w.file), w.written)
        };
        file.sync_data()?;
        s.generation = upto;
        s.at = Instant::now();
        Ok(())
    }

    /// With `fsync: interval`, makes what was appended durable once the
    /// interval has passed (called by the reader between records).
    pub fn sync_due(&self) {
        if matches!(self.settings.fsync, Fsync::Interval(_)) {
            let upto = self.w.lock().written;
            if let Err(e) = self.sync(upto) {
                tracing::error!(error = %e, "disk queue: fsync failed");
            }
        }
    }

    /// Records before `seq` are delivered (`docs` documents in total since
    /// the last call): persists the position and deletes segments wholly
    /// before it.
    pub fn ack(&self, seq: u64, docs: u64) -> io::Result<()> {
        self.metrics.events.sub(docs as i64);
        let mut w = self.w.lock();
        if seq <= w.acked {
            return Ok(());
        }
        if let Err(e) = write_ack(&self.settings.path, seq) {
            // Deleting delivered segments stays safe: a stale position only
            // means records of remaining segments are delivered again.
            tracing::error!(error = %e, "disk queue: cannot persist the acknowledged position");
        }
        w.acked = seq;
        // Every record delivered: start afresh so the active segment can go too.
        if seq == w.next_seq && w.active_len > 0 {
            if let Err(e) = self.rotate(&mut w) {
                tracing::warn!(error = %e, "disk queue: cannot start a new segment; the delivered one stays until the next");
            }
        }
        let mut freed = false;
        while let Some((s, len)) = w.sealed.front() {
            let next_first = w.sealed.get(1).map_or(w.active.first, |(n, _)| n.first);
            if next_first > seq {
                break;
            }
            let (path, len) = (s.path.clone(), *len);
            std::fs::remove_file(&path)?;
            w.sealed.pop_front();
            w.bytes -= len;
            freed = true;
        }
        self.metrics.bytes.set(w.bytes as i64);
        drop(w);
        if freed {
            self.changed.notify_all();
        }
        Ok(())
    }

    /// Records the records (`seq`, `docs`) the output answered although
    /// the acknowledged position does not cover them (at shutdown, behind a
    /// record still in flight), so the next run skips them instead of
    /// delivering and counting them a second time. The list found at start-up
    /// is kept for what the acknowledged position has not passed yet (written
    /// and renamed into place, then synced).
    pub fn record_delivered(&self, records: &[(u64, u32)]) -> io::Result<()> {
        let dir = &self.settings.path;
        let acked = self.w.lock().acked;
        let earlier = (self.delivered.iter())
            .filter(|(seq, _)| **seq >= acked)
            .map(|(seq, docs)| (*seq, *docs));
        let all: Vec<(u64, u32)> = records.iter().copied().chain(earlier).collect();
        let mut b = Vec::with_capacity(all.len() * 12 + 4);
        for (seq, docs) in &all {
            b.extend_from_slice(&seq.to_le_bytes());
            b.extend_from_slice(&docs.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let tmp = dir.join(format!("{DELIVERED_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(DELIVERED_FILE))?;
        File::open(dir)?.sync_all()?;
        let docs: u64 = records.iter().map(|(_, d)| u64::from(*d)).sum();
        self.metrics.events.sub(docs as i64);
        Ok(())
    }

    /// A reader from the acknowledged position.
    pub fn reader(self: &Arc<Self>) -> Reader {
        let w = self.w.lock();
        let first = w.sealed.front().map_or(w.active.first, |(s, _)| s.first);
        Reader {
            queue: Arc::clone(self),
            segment: first,
            offset: 0,
            file: None,
            last_seq: None,
            from: w.acked,
        }
    }

    /// Where a segment ends for readers, and whether a later segment exists.
    fn extent(&self, first: u64) -> Option<(u64, Option<u64>)> {
        let w = self.w.lock();
        if w.active.first == first {
            return Some((w.active_len, None));
        }
        let i = w.sealed.iter().position(|(s, _)| s.first == first)?;
        let next = w.sealed.get(i + 1).map_or(w.active.first, |(s, _)| s.first);
        Some((w.sealed[i].1, Some(next)))
    }

    fn first_segment_after(&self, first: u64) -> u64 {
        let w = self.w.lock();
        w.sealed
            .iter()
            .map(|(s, _)| s.first)
            .chain(std::iter::once(w.active.first))
            .find(|&f| f > first)
            .unwrap_or(w.active.first)
    }
}

/// One record read back.
#[derive(Debug)]
pub struct Record {
    pub seq: u64,
    pub docs: u32,
    pub payload: Vec<u8>,
}

/// Reads records in order, from the acknowledged position on.
pub struct Reader {
    queue: Arc<DiskQueue>,
    segment: u64,
    offset: u64,
    file: Option<File>,
    last_seq: Option<u64>,
    /// Records before this were acknowledged before the reader started.
    from: u64,
}

impl Reader {
    /// The next record, waiting up to `wait` for one to be appended.
    pub fn next(&mut self, wait: Duration) -> io::Result<Option<Record>> {
        let give_up = Instant::now() + wait;
        loop {
            let Some((end, next_segment)) = self.queue.extent(self.segment) else {
                // Our segment was deleted under us (cannot happen while we
                // hold unacknowledged records in it); move on.
                self.segment = self.queue.first_segment_after(self.segment);
                self.offset = 0;
                self.file = None;
                continue;
            };
            if self.offset < end {
                if self.file.is_none() {
                    self.file =
                        Some(Segment::at(&self.queue.settings.path, self.segment).open_read()?);
                }
                let Some(file) = self.file.as_ref() else {
                    continue;
                };
                match recovery::read_next(file, self.offset, end, self.last_seq)? {
                    Next::Record {
                        offset,
                        header,
                        payload,
                        skipped,
                    } => {
                        if skipped > 0 {
                            tracing::warn!(
                                segment = self.segment,
                                offset = self.offset,
                                bytes = skipped,
                                "disk queue: skipped unreadable bytes"
                            );
                        }
                        self.offset = offset + header.record_len();
                        self.last_seq = Some(header.seq);
                        if header.seq < self.from || self.queue.delivered.contains_key(&header.seq)
                        {
                            continue;
                        }
                        return Ok(Some(Record {
                            seq: header.seq,
                            docs: header.docs,
                            payload,
                        }));
                    }
                    Next::End { .. } => self.offset = end,
                }
                continue;
            }
            if let Some(next) = next_segment {
                self.segment = next;
                self.offset = 0;
                self.file = None;
                continue;
            }
            let now = Instant::now();
            if now >= give_up {
                return Ok(None);
            }
            let mut w = self.queue.w.lock();
            if w.active.first == self.segment && w.active_len <= self.offset {
                self.queue.changed.wait_for(&mut w, give_up - now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max_size: u64, segment_size: u64) -> Settings {
        Settings {
            path: dir.to_path_buf(),
            max_size,
            segment_size,
            fsync: Fsync::Request,
        }
    }

    fn doc(n: u64) -> Vec<u8> {
        format!("{{\"create\":{{\"_index\":\"logs-apm-default\"}}}}\n{{\"n\":{n}}}\n").into_bytes()
    }

    #[test]
    fn records_survive_a_reopen_until_acknowledged_and_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        {
            let q =
                DiskQueue::open(settings(dir.path(), 1 << 20, 200), Metrics::new(&reg)).unwrap();
            for n in 0..10 {
                q.append(&doc(n), 1, || false, || true).unwrap();
            }
            let mut r = q.reader();
            for n in 0..4 {
                let rec = r.next(Duration::ZERO).unwrap().unwrap();
                assert_eq!(rec.seq, n);
            }
            q.ack(4, 4).unwrap();
        }
        let reg = Registry::new();
        let q = DiskQueue::open(settings(dir.path(), 1 << 20, 200), Metrics::new(&reg)).unwrap();
        assert_eq!(q.report().pending_docs, 6);
        let mut r = q.reader();
        let mut seqs = Vec::new();
        while let Some(rec) = r.next(Duration::ZERO).unwrap() {
            seqs.push(rec.seq);
        }
        assert_eq!(seqs, (4..10).collect::<Vec<_>>());
        let before = segment::list(dir.path()).unwrap().len();
        q.ack(10, 6).unwrap();
        let after = segment::list(dir.path()).unwrap().len();
        assert!(after < before, "{before} -> {after}");
        assert_eq!(q.metrics().events.get(), 0);
    }

    #[test]
    fn records_delivered_behind_an_unacknowledged_one_are_skipped_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = DiskQueue::open(
                settings(dir.path(), 1 << 20, 1 << 20),
                Metrics::new(&Registry::new()),
            )
            .unwrap();
            for n in 0..4 {
                q.append(&doc(n), 1, || false, || true).unwrap();
            }
            // Record 0 still in flight at shutdown; 1 and 3 were answered.
            q.record_delivered(&[(1, 1), (3, 1)]).unwrap();
            assert_eq!(q.metrics().events.get(), 2);
        }
        let q = DiskQueue::open(
            settings(dir.path(), 1 << 20, 1 << 20),
            Metrics::new(&Registry::new()),
        )
        .unwrap();
        assert_eq!(q.report().pending_docs, 2);
        assert_eq!(q.metrics().replayed.get(), 2);
        let mut r = q.reader();
        let mut seqs = Vec::new();
        while let Some(rec) = r.next(Duration::ZERO).unwrap() {
            seqs.push(rec.seq);
        }
        assert_eq!(seqs, vec![0, 2]);
        // Shut down again before the position passed them: still skipped.
        q.record_delivered(&[]).unwrap();
        drop((r, q));
        let q = DiskQueue::open(
            settings(dir.path(), 1 << 20, 1 << 20),
            Metrics::new(&Registry::new()),
        )
        .unwrap();
        assert_eq!(q.report().pending_docs, 2);
    }

    #[test]
    fn the_group_commit_answers_every_record_once_it_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::open(
            settings(dir.path(), 1 << 20, 1 << 20),
            Metrics::new(&Registry::new()),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for n in 0..20 {
            let g = q.write_record(&doc(n), 1, || false, || true).unwrap();
            let tx = tx.clone();
            q.commit(g, Box::new(move |r| tx.send((n, r.is_ok())).unwrap()));
        }
        let mut answered: Vec<_> = (0..20)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        answered.sort();
        assert_eq!(answered, (0..20).map(|n| (n, true)).collect::<Vec<_>>());
        assert!(q.synced.lock().generation >= 20);
    }

    #[test]
    fn a_full_queue_waits_for_room_and_gives_up_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let q = DiskQueue::open(settings(dir.path(), 150, 1 << 20), Metrics::new(&reg)).unwrap();
        q.append(&doc(1), 1, || false, || true).unwrap();
        q.append(&doc(2), 1, || false, || true).unwrap();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let r = q.append(
            &doc(3),
            1,
            || asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 2,
            || true,
        );
        assert!(matches!(r, Err(AppendError::Cancelled)), "{r:?}");
        q.ack(2, 2).unwrap();
        q.append(&doc(3), 1, || true, || true).unwrap();
    }

    #[test]
    fn a_second_process_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new();
        let _q =
            DiskQueue::open(settings(dir.path(), 1 << 20, 1 << 20), Metrics::new(&reg)).unwrap();
        let again = DiskQueue::open(settings(dir.path(), 1 << 20, 1 << 20), Metrics::new(&reg));
        assert!(matches!(again, Err(OpenError::Locked(_))));
    }
}
