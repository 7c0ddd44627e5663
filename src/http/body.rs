//! Intake body decoding: decompression by `Content-Encoding` (gzip, every
//! member of a multi-member gzip body as Go's reader does, zlib-wrapped
//! deflate) or by sniffing a real gzip/zlib header, and splitting into
//! ndjson lines no longer than `max_event_size` (see docs/intake.md).
//!
//! Invariants: the body is processed as it arrives, never buffered whole;
//! at most one partial line (< `max_event_size` bytes) is held and an
//! over-long line is reported as soon as it reaches the limit (its rest is
//! skipped unread into memory); one [`BodyDecoder::feed`] produces at most
//! about 64 KiB of decoded bytes (it may consume less than it was given);
//! decoded bytes beyond `max_decompression_ratio` × body bytes (floor
//! [`RATIO_FLOOR`]) end the body; a plain body starting with `x` is never
//! taken for zlib; [`BodyDecoder::held`] bounds the bytes the decoder holds
//! (each line is its own allocation of its own length, so the count is
//! honest), which the handler charges to the memory budget.

use bytes::{Bytes, BytesMut};
use flate2::write::{MultiGzDecoder, ZlibDecoder};
use std::collections::VecDeque;
use std::io::Write;

/// Input slice size handed to the decompressor at once.
pub const FEED: usize = 4096;
/// Upper bound of the decoded bytes one [`BodyDecoder::feed`] produces.
pub const FEED_OUTPUT: usize = 64 << 10;
/// Memory a decompressor holds (its 32 KiB window, 32 KiB output buffer and state).
pub const DECOMPRESSOR_STATE: usize = 80 << 10;
/// Partial-line buffer kept between lines; a larger one is given back.
const PARTIAL_KEEP: usize = 8192;

/// One line of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineItem {
    /// A complete line without its `\n`; `terminated` is false for a final line without `\n`.
    Line { bytes: Bytes, terminated: bool },
    /// A line of `max_event_size` bytes or more: its first `max_event_size` bytes.
    TooLarge(Bytes),
    /// An empty line.
    Empty,
}

/// Splits decompressed bytes into lines.
///
/// A line reaching `max_event_size` is reported as [`LineItem::TooLarge`] at
/// once; the rest of it is skipped as it arrives, never held.
pub struct LineSplitter {
    max: usize,
    partial: BytesMut,
    /// Inside an over-long line already reported: skip to the next `\n`.
    skipping: bool,
    /// Decoded bytes written so far.
    pub written: u64,
    pub out: VecDeque<LineItem>,
    /// Bytes of the lines in `out`.
    held_lines: usize,
}

impl LineSplitter {
    pub fn new(max_event_size: usize) -> Self {
        LineSplitter {
            max: max_event_size.max(1),
            partial: BytesMut::with_capacity(PARTIAL_KEEP),
            skipping: false,
            written: 0,
            out: VecDeque::new(),
            held_lines: 0,
        }
    }

    fn push_part(&mut self, p: &[u8]) {
        if self.skipping {
            return;
        }
        if self.partial.len() + p.len() >= self.max {
            let take = self.max - self.partial.len();
            self.partial.extend_from_slice(&p[..take]);
            let line = self.take_partial();
            self.out.push_back(LineItem::TooLarge(line));
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(p);
        }
    }

    fn end_line(&mut self, terminated: bool) {
        if std::mem::take(&mut self.skipping) {
            return;
        }
        let item = if self.partial.is_empty() {
            LineItem::Empty
        } else {
            LineItem::Line {
                bytes: self.take_partial(),
                terminated,
            }
        };
        self.out.push_back(item);
    }

    /// The partial line as an allocation of its own length (a line never
    /// pins a larger buffer); the buffer is reused unless it grew large.
    fn take_partial(&mut self) -> Bytes {
        let line = Bytes::copy_from_slice(&self.partial);
        self.partial.clear();
        if self.partial.capacity() > PARTIAL_KEEP {
            self.partial = BytesMut::with_capacity(PARTIAL_KEEP);
        }
        self.held_lines += line.len();
        line
    }

    /// Emits the final line when the body did not end with `\n`.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() {
            self.end_line(false);
        }
        self.skipping = false;
    }
}

impl Write for LineSplitter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        let mut rest = buf;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let part = &rest[..i];
            if self.partial.is_empty()
                && !self.skipping
                && !part.is_empty()
                && part.len() < self.max
            {
                // the whole line is in this write: one copy, straight out
                self.held_lines += part.len();
                self.out.push_back(LineItem::Line {
                    bytes: Bytes::copy_from_slice(part),
                    terminated: true,
                });
            } else {
                self.push_part(part);
                self.end_line(true);
            }
            rest = &rest[i + 1..];
        }
        self.push_part(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Zlib,
    /// Decide from the first two bytes.
    Sniff,
}

impl Encoding {
    pub fn from_header(content_encoding: Option<&str>) -> Self {
        match content_encoding {
            Some("gzip") => Encoding::Gzip,
            Some("deflate") => Encoding::Zlib,
            _ => Encoding::Sniff,
        }
    }
}

/// A body decoding failure; `Display` is the reason after `data decoding error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("gzip: invalid header")]
    GzipHeader,
    #[error("zlib: invalid header")]
    ZlibHeader,
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// The decompressed body outgrew `apm-server.max_decompression_ratio`.
    #[error("decompressed body exceeds {ratio} times its compressed size (apm-server.max_decompression_ratio)")]
    RatioExceeded { ratio: u64 },
    /// The compressed stream is damaged; the decompressor's own text goes to
    /// the log (see [`corrupt`]), the agent reads a fixed sentence.
    #[error("{0}")]
    Corrupt(&'static str),
}

/// The agent-visible error for a decompressor failure; its own text, which
/// names library internals, is logged at debug level only.
fn corrupt(e: &std::io::Error) -> BodyError {
    tracing::debug!(error = %e, "compressed request body is corrupt");
    match e.kind() {
        std::io::ErrorKind::WriteZero => BodyError::Corrupt(AFTER_END),
        _ => BodyError::Corrupt("flate: corrupt input"),
    }
}

const AFTER_END: &str = "data after the end of the compressed stream";

/// Whether a body starting with `b0 b1` is sniffed as gzip or zlib.
pub(crate) fn sniffs_compressed(b0: u8, b1: u8) -> bool {
    is_gzip_magic(b0, b1) || is_zlib_header(b0, b1)
}

fn is_gzip_magic(b0: u8, b1: u8) -> bool {
    b0 == 0x1f && b1 == 0x8b
}

fn is_zlib_header(b0: u8, b1: u8) -> bool {
    b0 & 0x0f == 8 && (b0 >> 4) <= 7 && (u16::from(b0) << 8 | u16::from(b1)) % 31 == 0
}

/// Decoded bytes always allowed, whatever the ratio (small bodies compress
/// far better than 200:1 when they are repetitive).
pub const RATIO_FLOOR: u64 = 16 << 20;

enum Stage {
    /// Waiting for the first two bytes.
    Head(Encoding, Vec<u8>),
    Plain(LineSplitter),
    Gzip(Box<MultiGzDecoder<LineSplitter>>),
    Zlib(Box<ZlibDecoder<LineSplitter>>),
    Failed,
}

/// Streaming body decoder: feed chunks, take lines.
pub struct BodyDecoder {
    stage: Stage,
    max: usize,
    /// `max_decompression_ratio`; 0 = unlimited.
    ratio: u64,
    /// Body bytes consumed so far (as sent, before decompression).
    pub wire: u64,
    /// Decoded bytes produced so far.
    decoded: u64,
    /// Lines produced so far that the caller has not taken.
    drained: VecDeque<LineItem>,
    /// Bytes of the lines in `drained`.
    drained_bytes: usize,
    /// Whether any decompressed output was produced (header errors vs later corruption).
    pub started: bool,
}

impl BodyDecoder {
    pub fn new(enc: Encoding, max_event_size: usize) -> Self {
        BodyDecoder {
            stage: Stage::Head(enc, Vec::with_capacity(2)),
            max: max_event_size,
            ratio: 0,
            wire: 0,
            decoded: 0,
            drained: VecDeque::new(),
            drained_bytes: 0,
            started: false,
        }
    }

    /// Limits decoded bytes to `ratio` × body bytes (at least [`RATIO_FLOOR`]); 0 = off.
    pub fn with_ratio_limit(mut self, ratio: u64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Decoded (decompressed) bytes produced so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    fn start(&mut self, enc: Encoding, head: &[u8]) -> Result<(), BodyError> {
        let split = LineSplitter::new(self.max);
        let (b0, b1) = (head[0], head[1]);
        let gzip_magic = is_gzip_magic(b0, b1);
        self.stage = match enc {
            Encoding::Gzip if !gzip_magic => return Err(BodyError::GzipHeader),
            Encoding::Zlib if !is_zlib_header(b0, b1) => return Err(BodyError::ZlibHeader),
            Encoding::Gzip => Stage::Gzip(Box::new(MultiGzDecoder::new(split))),
            Encoding::Zlib => Stage::Zlib(Box::new(ZlibDecoder::new(split))),
            Encoding::Sniff if gzip_magic => Stage::Gzip(Box::new(MultiGzDecoder::new(split))),
            Encoding::Sniff if is_zlib_header(b0, b1) => {
                Stage::Zlib(Box::new(ZlibDecoder::new(split)))
            }
            Encoding::Sniff => Stage::Plain(split),
        };
        self.started = true;
        let mut rest = head;
        while !rest.is_empty() {
            let n = self.write(rest)?;
            rest = &rest[n..];
        }
        Ok(())
    }

    /// One write into the decoder: a decompressor takes what fits its 32 KiB
    /// output buffer, so one call produces a bounded amount of output.
    fn write(&mut self, data: &[u8]) -> Result<usize, BodyError> {
        let res = match &mut self.stage {
            Stage::Plain(s) => s.write(data),
            Stage::Gzip(d) => d.write(data),
            Stage::Zlib(d) => d.write(data),
            Stage::Head(..) | Stage::Failed => Ok(data.len()),
        };
        self.collect();
        match res {
            // Input the decompressor refuses: data after the end of the stream.
            Ok(0) if !data.is_empty() => {
                self.stage = Stage::Failed;
                Err(BodyError::Corrupt(AFTER_END))
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.stage = Stage::Failed;
                Err(corrupt(&e))
            }
        }
    }

    fn check_ratio(&mut self) -> Result<(), BodyError> {
        if self.ratio == 0 || matches!(self.stage, Stage::Plain(_)) {
            return Ok(());
        }
        let allowed = self.wire.saturating_mul(self.ratio).max(RATIO_FLOOR);
        if self.decoded() > allowed {
            self.stage = Stage::Failed;
            return Err(BodyError::RatioExceeded { ratio: self.ratio });
        }
        Ok(())
    }

    fn collect(&mut self) {
        let split = match &mut self.stage {
            Stage::Plain(s) => s,
            Stage::Gzip(d) => d.get_mut(),
            Stage::Zlib(d) => d.get_mut(),
            _ => return,
        };
        self.decoded = split.written;
        self.drained_bytes += std::mem::take(&mut split.held_lines);
        self.drained.append(&mut split.out);
    }

    /// Bytes this decoder holds now: the partial line's buffer, lines not
    /// yet taken, and the decompressor's state.
    pub fn held(&self) -> usize {
        let (split, state) = match &self.stage {
            Stage::Plain(s) => (s, 0),
            Stage::Gzip(d) => (d.get_ref(), DECOMPRESSOR_STATE),
            Stage::Zlib(d) => (d.get_ref(), DECOMPRESSOR_STATE),
            _ => return self.drained_bytes,
        };
        split.partial.capacity() + split.held_lines + state + self.drained_bytes
    }

    /// Feeds at most [`FEED`] bytes of `chunk`; returns how many were
    /// consumed, which may be fewer (callers loop). One call produces at most
    /// about 64 KiB of decoded bytes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<usize, BodyError> {
        let n = chunk.len().min(FEED);
        let part = &chunk[..n];
        let used = if let Stage::Head(enc, head) = &mut self.stage {
            let enc = *enc;
            let need = 2 - head.len();
            let take = need.min(part.len());
            head.extend_from_slice(&part[..take]);
            if head.len() >= 2 {
                let head = std::mem::take(head);
                self.start(enc, &head)?;
            }
            take
        } else {
            self.write(part)?
        };
        self.wire += used as u64;
        self.check_ratio()?;
        Ok(used)
    }

    /// Ends the body: flushes the decompressor and the last line.
    pub fn finish(&mut self) -> Result<(), BodyError> {
        if let Stage::Head(enc, head) = &mut self.stage {
            let (enc, head) = (*enc, std::mem::take(head));
            match (enc, head.len()) {
                (_, 0) => {
                    self.stage = Stage::Failed;
                    return Ok(());
                }
                (Encoding::Gzip | Encoding::Zlib, _) => return Err(BodyError::UnexpectedEof),
                (Encoding::Sniff, _) => {
                    let mut s = LineSplitter::new(self.max);
                    let _ = s.write_all(&head);
                    self.stage = Stage::Plain(s);
                    self.started = true;
                }
            }
        }
        let res = match &mut self.stage {
            Stage::Plain(s) => {
                s.finish();
                Ok(())
            }
            Stage::Gzip(d) => d.try_finish().map(|_| d.get_mut().finish()),
            Stage::Zlib(d) => d.try_finish().map(|_| d.get_mut().finish()),
            _ => Ok(()),
        };
        self.collect();
        res.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                BodyError::UnexpectedEof
            } else {
                corrupt(&e)
            }
        })?;
        self.check_ratio()
    }

    /// Takes the next complete line, if any.
    pub fn next_line(&mut self) -> Option<LineItem> {
        let item = self.drained.pop_front()?;
        if let LineItem::Line { bytes, .. } | LineItem::TooLarge(bytes) = &item {
            self.drained_bytes -= bytes.len();
        }
        Some(item)
    }

    /// Lines waiting to be taken.
    pub fn pending(&self) -> usize {
        self.drained.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;

    fn lines(enc: Encoding, body: &[u8], max: usize) -> Result<Vec<LineItem>, BodyError> {
        let mut d = BodyDecoder::new(enc, max);
        let mut rest = body;
        // feed in odd-sized chunks to cross boundaries
        while !rest.is_empty() {
            let n = rest.len().min(3);
            let mut chunk = &rest[..n];
            while !chunk.is_empty() {
                let used = d.feed(chunk)?;
                chunk = &chunk[used..];
            }
            rest = &rest[n..];
        }
        d.finish()?;
        Ok(std::iter::from_fn(|| d.next_line()).collect())
    }

    fn line(s: &str) -> LineItem {
        LineItem::Line {
            bytes: Bytes::copy_from_slice(s.as_bytes()),
            terminated: true,
        }
    }

    #[test]
    fn plain_gzip_zlib_and_sniffing() {
        let body = b"a\nbb\n";
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(body).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = ZlibEncoder::new(Vec::new(), Compression::default());
        zl.write_all(body).unwrap();
        let zl = zl.finish().unwrap();
        let want = vec![line("a"), line("bb")];
        assert_eq!(lines(Encoding::Sniff, body, 100).unwrap(), want);
        assert_eq!(lines(Encoding::Gzip, &gz, 100).unwrap(), want);
        assert_eq!(lines(Encoding::Sniff, &gz, 100).unwrap(), want);
        assert_eq!(lines(Encoding::Zlib, &zl, 100).unwrap(), want);
        assert_eq!(lines(Encoding::Sniff, &zl, 100).unwrap(), want);
        // plain body under a compression header (cases 16, 18)
        assert_eq!(lines(Encoding::Gzip, body, 100), Err(BodyError::GzipHeader));
        assert_eq!(lines(Encoding::Zlib, body, 100), Err(BodyError::ZlibHeader));
        // a plain body starting with x is not zlib
        assert_eq!(
            lines(Encoding::Sniff, b"xyz\n", 100).unwrap(),
            vec![line("xyz")]
        );
        // empty body with Content-Encoding: gzip is fine (Python agent flush)
        assert_eq!(lines(Encoding::Gzip, b"", 100).unwrap(), vec![]);
        // truncated gzip
        assert!(lines(Encoding::Gzip, &gz[..gz.len() - 4], 100).is_err());
    }

    #[test]
    fn gzip_body_with_two_members_is_read_whole() {
        let gz = |b: &[u8]| {
            let mut e = GzEncoder::new(Vec::new(), Compression::default());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let mut body = gz(b"a\nb");
        body.extend(gz(b"b\ncc\n"));
        let want = vec![line("a"), line("bb"), line("cc")];
        assert_eq!(lines(Encoding::Gzip, &body, 100).unwrap(), want);
        assert_eq!(lines(Encoding::Sniff, &body, 100).unwrap(), want);
        // garbage after the last member is still an error
        body.extend_from_slice(b"garbage");
        assert!(lines(Encoding::Gzip, &body, 100).is_err());
    }

    #[test]
    fn line_limits() {
        // a line over the limit is an error of its own; the lines around it survive
        let got = lines(
            Encoding::Sniff,
            b"line1\nline2\n01234567890123456789\nline4\nline5",
            10,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                line("line1"),
                line("line2"),
                LineItem::TooLarge(Bytes::from_static(b"0123456789")),
                line("line4"),
                LineItem::Line {
                    bytes: Bytes::from_static(b"line5"),
                    terminated: false
                },
            ]
        );
        // D.40: two consecutive over-long lines
        let got = lines(
            Encoding::Sniff,
            b"long-string-1\nanother-long-2\nline2\n",
            10,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                LineItem::TooLarge(Bytes::from_static(b"long-strin")),
                LineItem::TooLarge(Bytes::from_static(b"another-lo")),
                line("line2"),
            ]
        );
        // exactly max is too large; max-1 is fine; empty lines and \r kept
        let got = lines(Encoding::Sniff, b"123456789\n1234567890\n\nab\r\n", 10).unwrap();
        assert_eq!(
            got,
            vec![
                line("123456789"),
                LineItem::TooLarge(Bytes::from_static(b"1234567890")),
                LineItem::Empty,
                line("ab\r"),
            ]
        );
    }

    #[test]
    fn over_long_line_is_reported_before_it_ends() {
        let mut d = BodyDecoder::new(Encoding::Sniff, 10);
        let mut rest: &[u8] = b"meta\n0123456789abcdef";
        while !rest.is_empty() {
            let n = d.feed(rest).unwrap();
            rest = &rest[n..];
        }
        // the line has not ended, yet it is already reported (truncated)
        assert_eq!(d.next_line(), Some(line("meta")));
        assert_eq!(
            d.next_line(),
            Some(LineItem::TooLarge(Bytes::from_static(b"0123456789")))
        );
        d.feed(b"more and more\nok\n").unwrap();
        d.finish().unwrap();
        assert_eq!(d.next_line(), Some(line("ok")));
        assert_eq!(d.next_line(), None);
    }

    fn zeros_gz(n: usize) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(b"meta\n").unwrap();
        gz.write_all(&vec![0u8; n]).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn decompression_is_bounded_per_feed_and_by_ratio() {
        let body = zeros_gz(64 << 20);
        // ratio off: one feed call produces at most about 64 KiB
        let mut d = BodyDecoder::new(Encoding::Gzip, 100);
        let mut rest: &[u8] = &body;
        let mut before = 0;
        while !rest.is_empty() {
            let n = d.feed(rest).unwrap();
            rest = &rest[n..];
            assert!(d.decoded() - before <= 64 << 10, "{}", d.decoded() - before);
            before = d.decoded();
        }
        d.finish().unwrap();
        assert_eq!(d.decoded(), (64 << 20) + 5);
        // ratio 200: stops past the 16 MiB floor, long before the end
        let mut d = BodyDecoder::new(Encoding::Gzip, 100).with_ratio_limit(200);
        let mut rest: &[u8] = &body;
        let err = loop {
            match d.feed(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) => break e,
            }
            assert!(!rest.is_empty(), "the limit was not hit");
        };
        assert_eq!(err, BodyError::RatioExceeded { ratio: 200 });
        assert!(d.decoded() < RATIO_FLOOR + (64 << 10));
        assert_eq!(
            format!("data decoding error: {err}"),
            "data decoding error: decompressed body exceeds 200 times its compressed size (apm-server.max_decompression_ratio)"
        );
        // a plain body is never limited
        let mut d = BodyDecoder::new(Encoding::Sniff, 100).with_ratio_limit(1);
        let plain = vec![b'a'; RATIO_FLOOR as usize + 10];
        let mut rest: &[u8] = &plain;
        while !rest.is_empty() {
            let n = d.feed(rest).unwrap();
            rest = &rest[n..];
        }
        d.finish().unwrap();
    }
}
