//! Corpus loading and agent-like payload synthesis.
//!
//! Each corpus file becomes a [`Source`]: its metadata line plus its event
//! lines compiled into [`Template`]s. A template is the event's JSON with
//! every trace/transaction/span/parent id and every `timestamp` cut out, so a
//! body can be written by concatenating literal segments and fresh values —
//! no JSON parsing per request. Ids are rewritten by a keyed hash of the
//! original id and an *epoch* (stream number and how often the stream has
//! wrapped around the source), so references between events of one trace
//! stay consistent while every replay produces new, unique documents.
//! Timestamps are shifted so the newest event of the source lands at "now".

use std::path::{Path, PathBuf};

/// Keys whose hex string values are ids (v2 and RUM v3 names).
const ID_KEYS: &[&str] = &[
    "id",
    "trace_id",
    "transaction_id",
    "parent_id",
    "span_id",
    "tid",
    "pid",
    "xid",
];

const MARK_OPEN: &str = "\"@@LG";
const MARK_CLOSE: &str = "@@\"";

/// One piece of a compiled event line.
#[derive(Debug, Clone)]
enum Seg {
    Lit(Vec<u8>),
    /// A hex id of `len` characters (16 or 32), keyed by the original id.
    Id {
        key: u64,
        len: u8,
    },
    /// An epoch-microseconds timestamp, written as `orig + shift`.
    Ts {
        orig: i64,
    },
}

/// A compiled event line (without its trailing newline).
#[derive(Debug, Clone)]
pub struct Template {
    segs: Vec<Seg>,
}

/// Metadata plus events from one corpus file.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub metadata: Vec<u8>,
    pub events: Vec<Template>,
    max_ts: i64,
}

/// The intake dialect a mix speaks; decides the default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Backend,
    RumV2,
    RumV3,
}

impl Route {
    pub fn path(self) -> &'static str {
        match self {
            Route::Backend => "/intake/v2/events",
            Route::RumV2 => "/intake/v2/rum/events",
            Route::RumV3 => "/intake/v3/rum/events",
        }
    }
}

/// Named sets of corpus files.
pub fn mix_files(mix: &str) -> Option<(Route, &'static [&'static str])> {
    Some(match mix {
        "node" => (Route::Backend, &["bench/apm-nodejs-traces-3.29.0.ndjson"]),
        "intake" => (
            Route::Backend,
            &[
                "intake-v2/events.ndjson",
                "intake-v2/transactions.ndjson",
                "intake-v2/spans.ndjson",
                "intake-v2/errors.ndjson",
                "intake-v2/metricsets.ndjson",
                "intake-v2/logs.ndjson",
                "intake-v2/transactions_spans.ndjson",
                "intake-v2/span-links.ndjson",
            ],
        ),
        "rum-v2" => (
            Route::RumV2,
            &[
                "intake-v2/transactions_spans_rum.ndjson",
                "intake-v2/transactions_spans_rum_2.ndjson",
                "intake-v2/errors_rum.ndjson",
            ],
        ),
        "rum-v3" => (
            Route::RumV3,
            &["intake-v3/rum_events.ndjson", "intake-v3/rum_errors.ndjson"],
        ),
        _ => return None,
    })
}

/// The corpus root: `--corpus`, else `$APM_CORPUS`, else `../shared/corpus`.
pub fn corpus_root(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("APM_CORPUS").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/corpus"))
}

/// Loads and compiles one ndjson corpus file.
pub fn load_source(path: &Path) -> Result<Source, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let metadata = lines
        .next()
        .ok_or_else(|| format!("{}: empty file", path.display()))?;
    let mut events = Vec::new();
    let mut max_ts = 0i64;
    for (i, line) in lines.enumerate() {
        let t = compile(line, &mut max_ts)
            .map_err(|e| format!("{} event line {}: {e}", path.display(), i + 1))?;
        events.push(t);
    }
    if events.is_empty() {
        return Err(format!("{}: no events", path.display()));
    }
    let mut md = metadata.as_bytes().to_vec();
    md.push(b'\n');
    Ok(Source {
        name: path.display().to_string(),
        metadata: md,
        events,
        max_ts,
    })
}

fn is_hex_id(s: &str) -> bool {
    (s.len() == 16 || s.len() == 32) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mark(v: &mut serde_json::Value, max_ts: &mut i64) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if ID_KEYS.contains(&k.as_str()) && is_hex_id(s) => {
                        *s = format!("@@LGI{}:{}@@", s.len(), s);
                    }
                    Value::Number(n) if k == "timestamp" => {
                        if let Some(ts) = n.as_i64() {
                            *max_ts = (*max_ts).max(ts);
                            *v = Value::String(format!("@@LGT{ts}@@"));
                        }
                    }
                    _ => mark(v, max_ts),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| mark(v, max_ts)),
        _ => {}
    }
}

fn fnv(s: &[u8]) -> u64 {
    s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn compile(line: &str, max_ts: &mut i64) -> Result<Template, String> {
    // Like the server, take the first JSON value and ignore what follows it.
    let mut v: serde_json::Value = serde_json::Deserializer::from_str(line)
        .into_iter()
        .next()
        .ok_or_else(|| "empty line".to_string())?
        .map_err(|e| e.to_string())?;
    mark(&mut v, max_ts);
    let s = serde_json::to_string(&v).map_err(|e| e.to_string())?;
    let mut segs = Vec::new();
    let mut rest = s.as_str();
    while let Some(at) = rest.find(MARK_OPEN) {
        segs.push(Seg::Lit(rest.as_bytes()[..at].to_vec()));
        let after = &rest[at + MARK_OPEN.len()..];
        let end = after
            .find(MARK_CLOSE)
            .ok_or_else(|| "unterminated marker".to_string())?;
        let body = &after[..end];
        if let Some(ts) = body.strip_prefix('T') {
            let orig = ts.parse().map_err(|_| "bad timestamp marker".to_string())?;
            segs.push(Seg::Ts { orig });
        } else if let Some(id) = body.strip_prefix('I') {
            let (len, id) = id.split_once(':').ok_or("bad id marker")?;
            let len: u8 = len.parse().map_err(|_| "bad id length".to_string())?;
            segs.push(Seg::Id {
                key: fnv(id.as_bytes()),
                len,
            });
        }
        rest = &after[end + MARK_CLOSE.len()..];
    }
    segs.push(Seg::Lit(rest.as_bytes().to_vec()));
    Ok(Template { segs })
}

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut Vec<u8>, mut v: u64, digits: usize) {
    let start = out.len();
    out.resize(start + digits, b'0');
    for i in (0..digits).rev() {
        out[start + i] = HEX[(v & 15) as usize];
        v >>= 4;
    }
}

impl Template {
    fn write(&self, out: &mut Vec<u8>, epoch: u64, shift: i64) {
        let salt = mix64(epoch);
        for s in &self.segs {
            match s {
                Seg::Lit(b) => out.extend_from_slice(b),
                Seg::Id { key, len } => {
                    out.push(b'"');
                    let a = mix64(key ^ salt);
                    if *len == 32 {
                        push_hex(out, mix64(a), 16);
                    }
                    push_hex(out, a, 16);
                    out.push(b'"');
                }
                Seg::Ts { orig } => {
                    use std::io::Write;
                    let _ = write!(out, "{}", orig + shift);
                }
            }
        }
        out.push(b'\n');
    }
}

/// Where one stream is in each source: next event index and wrap count.
#[derive(Debug, Clone)]
pub struct Cursor {
    stream: u64,
    next_source: usize,
    pos: Vec<(usize, u64)>,
}

impl Cursor {
    /// A cursor for stream `stream`, starting at a stream-specific offset so
    /// concurrent streams do not send the same event sequence in lockstep.
    pub fn new(sources: &[Source], stream: u64) -> Self {
        let pos = sources
            .iter()
            .map(|s| ((mix64(stream) as usize) % s.events.len(), 0))
            .collect();
        Cursor {
            stream,
            next_source: (stream as usize) % sources.len().max(1),
            pos,
        }
    }
}

/// Writes one ndjson body (metadata line + `n` events) for the cursor's next
/// source into `out`; returns the number of events written.
pub fn build_body(
    sources: &[Source],
    cur: &mut Cursor,
    n: usize,
    now_us: i64,
    out: &mut Vec<u8>,
) -> usize {
    let si = cur.next_source;
    cur.next_source = (si + 1) % sources.len();
    let src = &sources[si];
    let shift = if src.max_ts > 0 {
        now_us - src.max_ts
    } else {
        0
    };
    out.extend_from_slice(&src.metadata);
    let (pos, epoch) = &mut cur.pos[si];
    for _ in 0..n {
        let e = (cur.stream << 32) ^ *epoch ^ ((si as u64) << 56);
        src.events[*pos].write(out, e, shift);
        *pos += 1;
        if *pos == src.events.len() {
            *pos = 0;
            *epoch += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_ids_and_timestamps_consistently() {
        let line = r#"{"span":{"id":"0123456789abcdef","trace_id":"0123456789abcdef0123456789abcdef","parent_id":"aaaaaaaaaaaaaaaa","timestamp":1000,"name":"x","context":{"user":{"id":42}}}}"#;
        let mut max_ts = 0;
        let t = compile(line, &mut max_ts).expect("compiles");
        assert_eq!(max_ts, 1000);
        let mut a = Vec::new();
        t.write(&mut a, 1, 5);
        let v: serde_json::Value = serde_json::from_slice(&a).expect("valid json");
        let s = &v["span"];
        assert_eq!(s["timestamp"], 1005);
        assert_eq!(s["id"].as_str().map(str::len), Some(16));
        assert_eq!(s["trace_id"].as_str().map(str::len), Some(32));
        assert_ne!(s["id"], "0123456789abcdef");
        assert_eq!(s["context"]["user"]["id"], 42);
        // same epoch, same ids; other epoch, other ids
        let mut b = Vec::new();
        t.write(&mut b, 1, 5);
        assert_eq!(a, b);
        let mut c = Vec::new();
        t.write(&mut c, 2, 5);
        assert_ne!(a, c);
    }
}
