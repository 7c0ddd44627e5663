//! Fuzz harnesses (issue 11): one entry per cargo-fuzz target in `fuzz/`,
//! also replayed over `fuzz/seeds` and `fuzz/regressions` by
//! `tests/fuzz_regressions.rs` so plain `cargo test` covers every input the
//! fuzzers ever tripped on.
//!
//! Each entry takes arbitrary bytes and panics only when an invariant breaks
//! (a panic in the code under test is a finding too):
//! * [`ndjson_framer`]: the lines the body decoder emits account for the
//!   body: in order, one item per `\n`-separated segment, `Line` equal to the
//!   segment and shorter than the limit, `TooLarge` a prefix of an over-long
//!   segment of at most the limit; compressed bodies we produced ourselves
//!   never fail; `feed` always makes progress.
//! * [`decode_v2`] / [`decode_v3`]: every decoded event encodes into a bulk
//!   action line and a document that serde_json parses as objects, and
//!   decoding a line again with the same (reused) decoder gives the same
//!   documents; numbers are written in Go's short form.
//! * [`client_ip`]: header parsing never panics; an untrusted peer's headers
//!   are ignored in trusted-proxy mode, and there only the header the
//!   proxies write decides; `nat_ip` is the peer exactly when a
//!   header supplied the client address; a port is never `Some(0)`.
//!
//! Not part of the server's API.
#![doc(hidden)]

use crate::http::body::{sniffs_compressed, BodyDecoder, Encoding, LineItem};
use crate::http::client_ip::{self, ClientAddr, TrustedProxies};
use crate::model::{encode, DecodeConfig, Decoder, EncodeContext, RequestBase};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use std::io::Write;
use std::net::SocketAddr;

// ---------------------------------------------------------------------------
// ndjson framer

/// Line limits the framer is exercised with (selected by the second byte).
const MAX_SIZES: [usize; 8] = [1, 2, 3, 7, 16, 100, 4095, 5000];
/// Network chunk sizes (selected by the third byte).
const CHUNKS: [usize; 8] = [1, 2, 3, 5, 64, 1000, 4097, usize::MAX];

/// Input: `[mode, max_idx, chunk_idx, body…]`. Mode (low 3 bits): 0 plain
/// body (sniffed), 1 body gzip-compressed by the harness, 2 body
/// zlib-compressed by the harness, 3 raw bytes as `Content-Encoding: gzip`,
/// 4 raw as `deflate`, 5+ raw bytes sniffed (may be taken for gzip/zlib).
pub fn ndjson_framer(data: &[u8]) {
    let [mode, max_idx, chunk_idx, body @ ..] = data else {
        return;
    };
    let max = MAX_SIZES[usize::from(*max_idx) % MAX_SIZES.len()];
    let chunk = CHUNKS[usize::from(*chunk_idx) % CHUNKS.len()];
    let (enc, wire, plain): (Encoding, Vec<u8>, Option<&[u8]>) = match mode & 7 {
        0 => {
            let sniffed_compressed = body.len() >= 2 && sniffs_compressed(body[0], body[1]);
            (
                Encoding::Sniff,
                body.to_vec(),
                (!sniffed_compressed).then_some(body),
            )
        }
        1 => {
            let mut e = GzEncoder::new(Vec::new(), Compression::fast());
            let _ = e.write_all(body);
            (Encoding::Gzip, e.finish().unwrap_or_default(), Some(body))
        }
        2 => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
            let _ = e.write_all(body);
            // Sniffing must find a real zlib header too.
            let enc = if mode & 8 == 0 {
                Encoding::Zlib
            } else {
                Encoding::Sniff
            };
            (enc, e.finish().unwrap_or_default(), Some(body))
        }
        3 => (Encoding::Gzip, body.to_vec(), None),
        4 => (Encoding::Zlib, body.to_vec(), None),
        _ => (Encoding::Sniff, body.to_vec(), None),
    };

    let mut d = BodyDecoder::new(enc, max);
    let mut items = Vec::new();
    let mut failed = false;
    'feed: for piece in wire.chunks(chunk.min(wire.len()).max(1)) {
        let mut rest = piece;
        let mut stalls = 0;
        while !rest.is_empty() {
            match d.feed(rest) {
                Ok(n) => {
                    assert!(n <= rest.len(), "feed consumed {n} of {} bytes", rest.len());
                    if n == 0 {
                        // Progress may wait for the caller to take lines; it must not stall twice.
                        stalls += 1;
                        assert!(stalls < 2, "feed made no progress");
                    } else {
                        stalls = 0;
                    }
                    rest = &rest[n..];
                }
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
            items.extend(std::iter::from_fn(|| d.next_line()));
        }
    }
    if !failed {
        failed = d.finish().is_err();
    }
    items.extend(std::iter::from_fn(|| d.next_line()));

    for item in &items {
        match item {
            LineItem::Line { bytes, .. } => {
                assert!(!bytes.is_empty(), "empty Line instead of Empty");
                assert!(bytes.len() <= max, "line of {} > max {max}", bytes.len());
                assert!(!bytes.contains(&b'\n'), "line contains a newline");
            }
            LineItem::TooLarge(b) => assert!(b.len() <= max, "TooLarge holds {} > {max}", b.len()),
            LineItem::Empty => {}
        }
    }
    if let Some(plain) = plain {
        assert!(!failed, "valid body (mode {}) failed", mode & 7);
        check_accounts_for(plain, max, &items);
    }
}

/// The emitted items are exactly the `\n`-separated segments of `plain`.
fn check_accounts_for(plain: &[u8], max: usize, items: &[LineItem]) {
    let mut segs: Vec<&[u8]> = plain.split(|&b| b == b'\n').collect();
    let last_unterminated = segs.pop().filter(|s| !s.is_empty());
    let expected = segs.len() + usize::from(last_unterminated.is_some());
    assert_eq!(items.len(), expected, "item count");
    let all = segs
        .iter()
        .map(|s| (*s, true))
        .chain(last_unterminated.map(|s| (s, false)));
    for (i, ((seg, terminated), item)) in all.zip(items).enumerate() {
        match item {
            LineItem::Empty => assert!(seg.is_empty(), "item {i}: Empty for {seg:?}"),
            LineItem::Line {
                bytes,
                terminated: t,
            } => {
                assert_eq!(&bytes[..], seg, "item {i}: line content");
                assert_eq!(*t, terminated, "item {i}: terminated flag");
                // `max` itself is over-long today; tolerate either boundary.
                assert!(seg.len() <= max, "item {i}: line of {} > max", seg.len());
            }
            LineItem::TooLarge(b) => {
                assert!(
                    seg.len() >= max,
                    "item {i}: TooLarge for {} bytes",
                    seg.len()
                );
                assert!(seg.starts_with(b), "item {i}: TooLarge is not a prefix");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// decoders

fn decode_lines(data: &[u8], rum: bool) {
    let base = RequestBase {
        received_ns: 1_700_000_000_123_456_789,
        rum,
        client_ip: "192.0.2.7".parse().ok(),
        source_port: Some(40000),
        nat_ip: None,
        user_agent: Some("fuzz/1.0".into()),
    };
    let cfg = DecodeConfig {
        default_service_environment: if rum { String::new() } else { "prod".into() },
    };
    let ctx = EncodeContext {
        observer_hostname: "fuzz-host".into(),
        observer_version: "8.15.0".into(),
        namespace: "default".into(),
    };
    let mut dec = Decoder::new(cfg);
    let mut lines = data.split(|&b| b == b'\n');
    let Some(first) = lines.next() else { return };
    let Ok(meta) = dec.decode_metadata(first, &base) else {
        return;
    };
    let mut events = Vec::new();
    for line in lines {
        events.clear();
        let first_try = dec.decode_event(line, &meta, &mut events);
        let docs = encode_all(&events, &ctx);
        // The decoder reuses its tape and buffers: a second pass must agree.
        events.clear();
        let again = dec.decode_event(line, &meta, &mut events);
        assert_eq!(first_try, again, "decoding is not repeatable");
        assert_eq!(
            docs,
            encode_all(&events, &ctx),
            "documents differ on re-decode"
        );
    }
}

/// Encodes each event and checks both lines are JSON objects.
fn encode_all(events: &[crate::model::Event], ctx: &EncodeContext) -> Vec<Vec<u8>> {
    let mut docs = Vec::with_capacity(events.len());
    for ev in events {
        let mut out = Vec::new();
        if !encode(ev, ctx, &mut out) {
            assert!(out.is_empty(), "dropped event wrote bytes");
            continue;
        }
        assert_eq!(out.last(), Some(&b'\n'), "document not newline-terminated");
        let body = &out[..out.len() - 1];
        let nl = body.iter().position(|&b| b == b'\n');
        let Some(nl) = nl else {
            panic!("no action line: {}", String::from_utf8_lossy(&out));
        };
        check_number_lengths(body);
        for part in [&body[..nl], &body[nl + 1..]] {
            match serde_json::from_slice::<serde_json::Value>(part) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(other) => panic!("not an object: {other}"),
                Err(e) => panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(part)),
            }
        }
        docs.push(out);
    }
    docs
}

/// Numbers are written as Go's encoding/json writes them: shortest form,
/// exponent outside `[1e-6, 1e21)`, so no number token is longer than
/// `-0.0000012345678901234567` (25 bytes; `-1.2345678901234567e-100` is 24).
fn check_number_lengths(doc: &[u8]) {
    let (mut in_str, mut esc, mut run) = (false, false, 0usize);
    for &b in doc {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
            run += 1;
            assert!(
                run <= 25,
                "over-long number in {}",
                String::from_utf8_lossy(doc)
            );
        } else {
            run = 0;
            in_str = b == b'"';
        }
    }
}

/// ndjson through the intake decoder as on the v2 endpoints (first line metadata).
pub fn decode_v2(data: &[u8]) {
    decode_lines(data, false);
}

/// ndjson through the intake decoder as on the RUM v3 endpoint.
pub fn decode_v3(data: &[u8]) {
    decode_lines(data, true);
}

// ---------------------------------------------------------------------------
// client IP

const HEADER_NAMES: [&str; 4] = ["forwarded", "x-real-ip", "x-forwarded-for", "x-other"];
const PEERS: [Option<&str>; 6] = [
    None,
    Some("10.0.0.1:5555"),
    Some("203.0.113.7:80"),
    Some("[::1]:0"),
    Some("[2001:db8::5]:443"),
    Some("[::ffff:10.1.1.1]:1"),
];

/// Input: `[mode, peer_idx, lines…]`; each `\n`-separated line is a header
/// whose first byte picks the name and whose rest is the value. Mode bit 0:
/// trusted proxies `10.0.0.0/8, ::1, 2001:db8::/32`; bit 1: the first line is
/// instead a `trusted_proxies` entry to parse.
pub fn client_ip(data: &[u8]) {
    let [mode, peer_idx, rest @ ..] = data else {
        return;
    };
    let peer: Option<SocketAddr> =
        PEERS[usize::from(*peer_idx) % PEERS.len()].and_then(|p| p.parse().ok());
    let mut lines = rest.split(|&b| b == b'\n');
    let mut cidrs: Vec<String> = Vec::new();
    if mode & 1 == 1 {
        cidrs.extend(["10.0.0.0/8", "::1", "2001:db8::/32"].map(String::from));
    }
    if mode & 2 == 2 {
        if let Some(l) = lines.next() {
            cidrs.push(String::from_utf8_lossy(l).into_owned());
        }
    }
    let trusted = TrustedProxies::new(&cidrs)
        .or_else(|_| TrustedProxies::new(&cidrs[..cidrs.len().min(3)]))
        .unwrap_or_default();

    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((&sel, value)) = line.split_first() else {
            continue;
        };
        let name = HEADER_NAMES[usize::from(sel) % HEADER_NAMES.len()];
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), v);
        }
        if let Ok(s) = std::str::from_utf8(value) {
            let f = client_ip::parse_forwarded(s);
            let _ = client_ip::parse_ip_port(&f.for_);
            let _ = client_ip::parse_ip_port(s);
        }
    }

    let a = client_ip::derive(peer, &headers, &trusted);
    let from_peer = ClientAddr {
        client_ip: peer.map(|p| p.ip()),
        source_port: peer.map(|p| p.port()).filter(|p| *p != 0),
        nat_ip: None,
    };
    assert_ne!(a.source_port, Some(0), "port 0 reported");
    if !trusted.is_empty() && !peer.is_some_and(|p| trusted.contains(&p.ip())) {
        assert_eq!(a, from_peer, "untrusted peer's headers were honoured");
    }
    if !trusted.is_empty() {
        // only the header the proxies write (X-Forwarded-For by default) decides
        let mut only = HeaderMap::new();
        for v in headers.get_all("x-forwarded-for") {
            only.append(HeaderName::from_static("x-forwarded-for"), v.clone());
        }
        assert_eq!(
            client_ip::derive(peer, &only, &trusted),
            a,
            "a header the trusted proxies do not write decided"
        );
    }
    if peer.is_some() && a.nat_ip.is_none() {
        assert_eq!(a, from_peer, "client IP neither from a header nor the peer");
    }
    if let Some(nat) = a.nat_ip {
        assert_eq!(Some(nat), peer.map(|p| p.ip()), "nat_ip is not the peer");
        assert!(a.client_ip.is_some(), "nat_ip without a client IP");
    }
    if a.client_ip.is_none() {
        assert!(peer.is_none(), "peer IP lost");
    }
    let no_forwarding = HEADER_NAMES[..3].iter().all(|n| headers.get(*n).is_none());
    if no_forwarding {
        assert_eq!(a, from_peer, "no forwarding header but not the peer");
    }
}

// ---------------------------------------------------------------------------
// OTLP translation

/// OTLP decoding (`decode_otlp` target): the first byte picks the signal,
/// the rest is the protobuf message. Invariants: decoding never panics;
/// every event it yields encodes into an action line and a document that
/// serde_json parses as objects; decoding the same bytes again gives the
/// same number of events and refusals.
pub fn decode_otlp(data: &[u8]) {
    use crate::model::otlp::{decode_otlp, Signal};
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let signal = [Signal::Traces, Signal::Metrics, Signal::Logs][usize::from(sel) % 3];
    let base = RequestBase::default();
    let mut events = Vec::new();
    let first = decode_otlp(signal, msg, &base, &mut events);
    let ctx = EncodeContext {
        observer_hostname: "fuzz".into(),
        observer_version: "9.0.0".into(),
        namespace: "default".into(),
    };
    for ev in &events {
        let mut out = Vec::new();
        if !encode(ev, &ctx, &mut out) {
            continue;
        }
        let text = std::str::from_utf8(&out).expect("documents are UTF-8");
        let mut lines = text.lines();
        for part in ["action", "document"] {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("{part} line missing"));
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{part} is not JSON ({e}): {line}"));
            assert!(v.is_object(), "{part} is not an object");
        }
    }
    let mut again = Vec::new();
    let second = decode_otlp(signal, msg, &base, &mut again);
    assert_eq!(events.len(), again.len(), "event count differs on replay");
    assert_eq!(
        first.map(|r| r.len()).ok(),
        second.map(|r| r.len()).ok(),
        "refusals differ on replay"
    );
}
