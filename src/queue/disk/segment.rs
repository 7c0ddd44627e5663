//! Segment files: the log is a directory of files named after the sequence
//! number of their first record (`00000000000000000042.seg`), appended to
//! one at a time and deleted whole once every record in them is acknowledged.
//!
//! Invariants: segment names sort in record order; only the newest segment
//! is ever written; a segment is deleted only when the next one starts at or
//! before the acknowledged sequence number.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SUFFIX: &str = ".seg";

/// One segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sequence number of its first record.
    pub first: u64,
    pub path: PathBuf,
}

impl Segment {
    /// The segment of `dir` whose first record is `first`.
    pub fn at(dir: &Path, first: u64) -> Segment {
        Segment {
            first,
            path: dir.join(format!("{first:020}{SUFFIX}")),
        }
    }

    /// Creates the file (it must not exist) for appending.
    pub fn create(&self) -> io::Result<File> {
        OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&self.path)
    }

    pub fn open_read(&self) -> io::Result<File> {
        File::open(&self.path)
    }
}

/// The segments of `dir`, oldest first. Other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(Segment {
            first,
            path: entry.path(),
        });
    }
    out.sort_by_key(|s| s.first);
    Ok(out)
}

/// Reads exactly `buf.len()` bytes at `offset`; `Ok(false)` when the file ends first.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
