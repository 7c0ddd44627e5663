//! Reading records back: the next verified record from an offset, skipping
//! what cannot be read, and the start-up scan that counts what the queue
//! holds and what it lost.
//!
//! A record that fails its checksum (a corrupted middle record) is skipped
//! by searching forward for the next record whose header, length and
//! checksum all hold and whose sequence number follows the last good one; a
//! tail that holds no whole record (a write torn by a crash or a full disk)
//! ends the segment. Neither ever panics: every length read from disk is
//! checked against the file before it is used.

use super::record::{Header, HEADER};
use super::segment::{self, Segment};
use std::fs::File;
use std::io;

/// Largest gap in sequence numbers accepted when searching past corruption.
const MAX_SEQ_GAP: u64 = 1 << 20;

/// What [`read_next`] found.
#[derive(Debug)]
pub enum Next {
    /// A verified record starting `skipped` bytes after the requested offset
    /// (`skipped > 0`: the bytes in between could not be read).
    Record {
        offset: u64,
        header: Header,
        payload: Vec<u8>,
        skipped: u64,
    },
    /// No further whole record before `end`; `torn` bytes hold none.
    End { torn: u64 },
}

fn header_at(buf: &[u8]) -> Option<Header> {
    let h: &[u8; HEADER] = buf.get(..HEADER)?.try_into().ok()?;
    Some(Header::parse(h))
}

fn plausible(h: &Header, after: Option<u64>) -> bool {
    match after {
        Some(a) => h.seq > a && h.seq - a <= MAX_SEQ_GAP,
        None => true,
    }
}

/// The next verified record of `file` at or after `offset`, reading no
/// further than `end`. `after` is the sequence number of the last record
/// read before (a candidate found past corruption must follow it).
pub fn read_next(file: &File, offset: u64, end: u64, after: Option<u64>) -> io::Result<Next> {
    if offset + HEADER as u64 <= end {
        let mut hb = [0u8; HEADER];
        if segment::read_at(file, &mut hb, offset)? {
            let header = Header::parse(&hb);
            if offset + header.record_len() <= end && plausible(&header, after) {
                let mut payload = vec![0u8; header.len as usize];
                if segment::read_at(file, &mut payload, offset + HEADER as u64)?
                    && header.verifies(&payload)
                {
                    return Ok(Next::Record {
                        offset,
                        header,
                        payload,
                        skipped: 0,
                    });
                }
            }
        }
    }
    resync(file, offset, end, after)
}

/// Searches `[offset, end)` in memory for the first verifiable record.
fn resync(file: &File, offset: u64, end: u64, after: Option<u64>) -> io::Result<Next> {
    let span = end.saturating_sub(offset);
    let mut buf = vec![0u8; span as usize];
    if !segment::read_at(file, &mut buf, offset)? {
        return Ok(Next::End { torn: span });
    }
    for p in 1..buf.len() {
        let Some(header) = header_at(&buf[p..]) else {
            break;
        };
        let Some(payload) = buf[p + HEADER..].get(..header.len as usize) else {
            continue;
        };
        if plausible(&header, after) && header.verifies(payload) {
            return Ok(Next::Record {
                offset: offset + p as u64,
                header,
                payload: payload.to_vec(),
                skipped: p as u64,
            });
        }
    }
    Ok(Next::End { torn: span })
}

/// What the start-up scan found in the queue directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub segments: usize,
    /// Verified records not yet acknowledged (to be delivered).
    pub pending_records: u64,
    /// Documents in those records.
    pub pending_docs: u64,
    /// Regions skipped because they failed their checksum (each at least one record).
    pub corrupt_regions: u64,
    /// Bytes that could not be read (corrupt regions and torn tails).
    pub unreadable_bytes: u64,
    /// Sequence number of the last verified record, if any.
    pub last_seq: Option<u64>,
    /// Bytes of all segments.
    pub bytes: u64,
}

/// Scans every segment, counting the records at or after `acked`.
pub fn scan(segments: &[Segment], acked: u64) -> io::Result<Report> {
    let mut r = Report {
        segments: segments.len(),
        ..Report::default()
    };
    for seg in segments {
        let file = seg.open_read()?;
        let end = file.metadata()?.len();
        r.bytes += end;
        let mut offset = 0;
        while offset < end {
            match read_next(&file, offset, end, r.last_seq)? {
                Next::Record {
                    offset: at,
                    header,
                    skipped,
                    ..
                } => {
                    if skipped > 0 {
                        r.corrupt_regions += 1;
                        r.unreadable_bytes += skipped;
                    }
                    if header.seq >= acked {
                        r.pending_records += 1;
                        r.pending_docs += u64::from(header.docs);
                    }
                    r.last_seq = Some(header.seq);
                    offset = at + header.record_len();
                }
                Next::End { torn } => {
                    if torn > 0 {
                        r.unreadable_bytes += torn;
                    }
                    break;
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::record;
    use super::*;
    use std::io::Write;

    fn write_records(path: &std::path::Path, n: u64) -> Vec<u64> {
        let mut f = File::create(path).unwrap();
        let mut ends = Vec::new();
        let mut at = 0;
        for seq in 0..n {
            let mut out = Vec::new();
            let payload = format!("{{\"create\":{{}}}}\n{{\"n\":{seq}}}\n");
            record::encode(seq, 1, payload.as_bytes(), &mut out);
            f.write_all(&out).unwrap();
            at += out.len() as u64;
            ends.push(at);
        }
        ends
    }

    #[test]
    fn a_corrupted_middle_record_and_a_torn_tail_are_counted_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::at(dir.path(), 0);
        let ends = write_records(&seg.path, 10);
        let mut bytes = std::fs::read(&seg.path).unwrap();
        // flip a payload byte of record 4, and tear the last record
        bytes[ends[3] as usize + HEADER + 2] ^= 0xff;
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&seg.path, &bytes).unwrap();
        let r = scan(&[seg], 0).unwrap();
        assert_eq!(r.pending_records, 8, "{r:?}");
        assert_eq!(r.corrupt_regions, 1);
        assert_eq!(r.last_seq, Some(8));
        assert_eq!(
            r.unreadable_bytes,
            (ends[4] - ends[3]) + (ends[9] - ends[8] - 3)
        );
    }

    #[test]
    fn a_header_pointing_past_the_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::at(dir.path(), 0);
        write_records(&seg.path, 3);
        let mut bytes = std::fs::read(&seg.path).unwrap();
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&seg.path, &bytes).unwrap();
        let r = scan(&[seg], 1).unwrap();
        assert_eq!((r.pending_records, r.corrupt_regions), (2, 1), "{r:?}");
    }
}
