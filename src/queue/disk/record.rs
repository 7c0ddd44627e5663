//! The on-disk record: one accepted batch of encoded documents.
//!
//! Layout (little endian):
//!
//! ```text
//! len: u32 | crc: u32 | seq: u64 | docs: u32 | payload: len bytes
//! ```
//!
//! `payload` is the batch's documents, each an action line and a source line
//! (`action\nsource\n`), back to back. `crc` is CRC-32 (crc32fast) over
//! `seq`, `docs` and `payload`, so a torn write, a flipped bit or a header
//! that points into garbage is detected before anything is indexed.
//!
//! Invariants: a record is written with a single `write` call under the
//! queue's write lock; `seq` increases by one per record over the queue's
//! whole life (it names the record in document ids and in the ack file).

/// Bytes before the payload.
pub const HEADER: usize = 20;

/// A record's header as read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
    pub docs: u32,
}

impl Header {
    /// Reads a header from its first [`HEADER`] bytes.
    pub fn parse(b: &[u8; HEADER]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[8..16]);
        Header {
            len: u32_at(0),
            crc: u32_at(4),
            seq: u64::from_le_bytes(seq),
            docs: u32_at(16),
        }
    }

    /// Bytes of the whole record.
    pub fn record_len(&self) -> u64 {
        HEADER as u64 + u64::from(self.len)
    }

    /// True when `payload` is the one this header was written with.
    pub fn verifies(&self, payload: &[u8]) -> bool {
        payload.len() == self.len as usize && checksum(self.seq, self.docs, payload) == self.crc
    }
}

fn checksum(seq: u64, docs: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&docs.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends a whole record for `payload` to `out`.
pub fn encode(seq: u64, docs: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(seq, docs, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&docs.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits a verified payload into its documents (`action\nsource\n` each).
pub fn documents(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = payload;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let first = rest.iter().position(|&b| b == b'\n')?;
        let second = rest[first + 1..].iter().position(|&b| b == b'\n')?;
        let (doc, tail) = rest.split_at(first + second + 2);
        rest = tail;
        Some(doc)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_flipped_bit_is_detected() {
        let payload = b"{\"create\":{}}\n{\"a\":1}\n{\"create\":{}}\n{\"b\":2}\n";
        let mut out = Vec::new();
        encode(7, 2, payload, &mut out);
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&out[..HEADER]);
        let header = Header::parse(&h);
        assert_eq!((header.seq, header.docs), (7, 2));
        assert_eq!(header.record_len() as usize, out.len());
        assert!(header.verifies(&out[HEADER..]));
        let docs: Vec<&[u8]> = documents(&out[HEADER..]).collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1], b"{\"create\":{}}\n{\"b\":2}\n");
        let mut bad = out[HEADER..].to_vec();
        bad[3] ^= 1;
        assert!(!header.verifies(&bad));
    }
}
