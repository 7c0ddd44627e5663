//! Line decoding: the [`Decoder`], the root-key scan (docs/intake.md,
//! Framing) and a zero-allocation view over the parsed line.
//!
//! Layout: one file of field rules per event type (`metadata`,
//! `transaction`, `span`, `error`, `metricset`, `log`, plus `context` and
//! `stacktrace` for the parts events share). Each rule set is written once;
//! a dialect (v2, or RUM v3 with its short keys) is a const table of key
//! names and the order its upstream struct checks them in. `fields` holds
//! the typed reads and the validation context; `events` the one path every
//! event line takes.
//!
//! Invariants: a line is parsed once with simd-json into a borrowed value
//! tree over the decoder's scratch buffer (only the first JSON value of the
//! line is parsed; trailing bytes are ignored). Type mismatches are decode
//! errors returned at once; schema violations are recorded in [`fields::Ctx`] (the
//! first one wins, in upstream struct order) and reported after decoding, so
//! a decode error anywhere in the line takes precedence. Nothing here panics
//! on client data.

mod context;
mod error;
mod events;
mod fields;
mod log;
mod metadata;
mod metricset;
mod span;
mod stacktrace;
mod syntax;
mod transaction;

use super::event::Metadata;
use super::{DecodeConfig, Event, LineError, RequestBase};
pub(crate) use simd_json::StaticNode;
use simd_json::{Node, Tape};

pub(crate) type R<T> = Result<T, LineError>;

// ---------------------------------------------------------------------------
// A zero-allocation view over a simd-json tape (the decoder reuses one tape
// for every line, so parsing allocates nothing per object).

/// One JSON value on the tape.
#[derive(Clone, Copy, Debug)]
pub(crate) enum V<'a> {
    Static(StaticNode),
    String(&'a str),
    Array(Arr<'a>),
    Object(Obj<'a>),
}

/// A JSON object on the tape: `nodes` holds its keys and values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Obj<'a> {
    nodes: &'a [Node<'a>],
    len: usize,
}

/// A JSON array on the tape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arr<'a> {
    nodes: &'a [Node<'a>],
    len: usize,
}

fn node_count(n: Option<&Node<'_>>) -> usize {
    match n {
        Some(Node::Object { count, .. } | Node::Array { count, .. }) => count.saturating_add(1),
        _ => 1,
    }
}

/// The value starting at `nodes[0]`.
fn view<'a>(nodes: &'a [Node<'a>]) -> V<'a> {
    match nodes.first() {
        Some(Node::String(s)) => V::String(s),
        Some(Node::Static(st)) => V::Static(*st),
        Some(Node::Object { len, count }) => V::Object(Obj {
            nodes: nodes.get(1..count.saturating_add(1)).unwrap_or_default(),
            len: *len,
        }),
        Some(Node::Array { len, count }) => V::Array(Arr {
            nodes: nodes.get(1..count.saturating_add(1)).unwrap_or_default(),
            len: *len,
        }),
        None => V::Static(StaticNode::Null),
    }
}

impl<'a> V<'a> {
    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self {
            V::String(s) => Some(s),
            _ => None,
        }
    }
    /// Any number as f64.
    pub(crate) fn cast_f64(&self) -> Option<f64> {
        match *self {
            V::Static(StaticNode::I64(i)) => Some(i as f64),
            V::Static(StaticNode::U64(u)) => Some(u as f64),
            V::Static(StaticNode::F64(f)) => Some(f),
            _ => None,
        }
    }
}

/// Iterator over the (key, value) pairs of an [`Obj`].
pub(crate) struct ObjIter<'a> {
    nodes: &'a [Node<'a>],
    left: usize,
}

impl<'a> Iterator for ObjIter<'a> {
    type Item = (&'a str, V<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = match self.nodes.first() {
            Some(Node::String(k)) => *k,
            _ => {
                self.left = 0;
                return None;
            }
        };
        let rest = self.nodes.get(1..).unwrap_or_default();
        let n = node_count(rest.first());
        let v = view(rest);
        self.nodes = rest.get(n..).unwrap_or_default();
        Some((key, v))
    }
}

impl<'a> Obj<'a> {
    pub(crate) fn iter(&self) -> ObjIter<'a> {
        ObjIter {
            nodes: self.nodes,
            left: self.len,
        }
    }
    pub(crate) fn values(&self) -> impl Iterator<Item = V<'a>> {
        self.iter().map(|(_, v)| v)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Iterator over the elements of an [`Arr`].
pub(crate) struct ArrIter<'a> {
    nodes: &'a [Node<'a>],
    left: usize,
}

impl<'a> Iterator for ArrIter<'a> {
    type Item = V<'a>;
    fn next(&mut self) -> Option<V<'a>> {
        if self.left == 0 || self.nodes.is_empty() {
            return None;
        }
        self.left -= 1;
        let n = node_count(self.nodes.first());
        let v = view(self.nodes);
        self.nodes = self.nodes.get(n..).unwrap_or_default();
        Some(v)
    }
}

impl<'a> Arr<'a> {
    pub(crate) fn iter(&self) -> ArrIter<'a> {
        ArrIter {
            nodes: self.nodes,
            left: self.len,
        }
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<'a> IntoIterator for Arr<'a> {
    type Item = V<'a>;
    type IntoIter = ArrIter<'a>;
    fn into_iter(self) -> ArrIter<'a> {
        self.iter()
    }
}

/// Decodes lines of one stream at a time; one per decoder actor.
pub struct Decoder {
    pub(crate) cfg: DecodeConfig,
    scratch: Vec<u8>,
    retry: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<Tape<'static>>,
}

/// The first quoted key of a line: text between the first `"` or `'` and the
/// next identical quote. `None` when there is no complete quoted string.
pub(crate) fn root_key(line: &[u8]) -> Option<&[u8]> {
    let start = line.iter().position(|&b| b == b'"' || b == b'\'')?;
    let q = *line.get(start)?;
    let rest = line.get(start + 1..)?;
    let end = rest.iter().position(|&b| b == q)?;
    rest.get(..end)
}

/// Byte length of the first JSON value of `line` (leading whitespace
/// included), or the whole line when it does not end inside it.
pub(crate) fn first_value_len(line: &[u8]) -> usize {
    let mut i = 0;
    while i < line.len() && matches!(line[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    let Some(&first) = line.get(i) else {
        return line.len();
    };
    match first {
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut in_str = false;
            let mut esc = false;
            while i < line.len() {
                let b = line[i];
                if in_str {
                    if esc {
                        esc = false;
                    } else if b == b'\\' {
                        esc = true;
                    } else if b == b'"' {
                        in_str = false;
                    }
                } else {
                    match b {
                        b'"' => in_str = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
            line.len()
        }
        _ => line.len(),
    }
}

/// Deepest nesting of objects and arrays a line may have; deeper lines are
/// decode errors (walking them recursively could overflow the stack).
pub const MAX_DEPTH: usize = 1000;

/// Whether the value tree on `nodes` nests deeper than `limit` (iterative).
fn too_deep(nodes: &[Node<'_>], limit: usize) -> bool {
    if nodes.len() <= limit {
        return false;
    }
    // End index (exclusive) of every open container.
    let mut open: Vec<usize> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        while open.last().is_some_and(|&end| end <= i) {
            open.pop();
        }
        if let Node::Object { count, .. } | Node::Array { count, .. } = n {
            open.push(i.saturating_add(*count).saturating_add(1));
            if open.len() > limit {
                return true;
            }
        }
    }
    false
}

fn root_object<'a>(nodes: &'a [Node<'a>]) -> R<Obj<'a>> {
    if too_deep(nodes, MAX_DEPTH) {
        return Err(LineError::Decode(format!(
            "nesting deeper than {MAX_DEPTH} levels"
        )));
    }
    match view(nodes) {
        V::Object(o) => Ok(o),
        _ => Err(LineError::Decode("expected a JSON object".into())),
    }
}

impl Decoder {
    /// A decoder applying `cfg`.
    pub fn new(cfg: DecodeConfig) -> Self {
        Decoder {
            cfg,
            scratch: Vec::new(),
            retry: Vec::new(),
            buffers: simd_json::Buffers::default(),
            tape: None,
        }
    }

    /// Parses the first JSON value of `line` and hands the root object to `f`.
    /// The whole line is tried first (the common case); only when that fails
    /// is the line cut after its first value and parsed again, so trailing
    /// bytes are ignored without scanning every line.
    fn with_root<T>(
        &mut self,
        line: &[u8],
        f: impl FnOnce(Obj<'_>, &DecodeConfig) -> R<T>,
    ) -> R<T> {
        let mut tape: Tape<'_> = self.tape.take().unwrap_or_else(Tape::null).reset();
        self.scratch.clear();
        self.scratch.extend_from_slice(line);
        let err = match simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape) {
            Ok(()) => {
                let r = root_object(&tape.0).and_then(|o| f(o, &self.cfg));
                self.tape = Some(tape.reset());
                return r;
            }
            Err(e) => e,
        };
        let mut tape: Tape<'_> = tape.reset();
        let n = first_value_len(line);
        if n >= line.len() {
            self.tape = Some(tape.reset());
            return Err(syntax::syntax_error(&err));
        }
        self.retry.clear();
        self.retry.extend_from_slice(line.get(..n).unwrap_or(line));
        let r = match simd_json::fill_tape(&mut self.retry, &mut self.buffers, &mut tape) {
            Ok(()) => root_object(&tape.0).and_then(|o| f(o, &self.cfg)),
            Err(e) => Err(syntax::syntax_error(&e)),
        };
        self.tape = Some(tape.reset());
        r
    }

    /// Decodes the first line of a stream (root key `metadata`, or `m` for RUM v3).
    pub fn decode_metadata(
        &mut self,
        line: &[u8],
        base: &RequestBase,
    ) -> Result<Metadata, LineError> {
        match root_key(line) {
            Some(b"metadata") => self.with_root(line, |o, cfg| {
                metadata::decode_metadata(o, base, cfg, &metadata::V2)
            }),
            Some(b"m") => self.with_root(line, |o, cfg| {
                metadata::decode_metadata(o, base, cfg, &metadata::V3)
            }),
            _ => Err(LineError::MetadataRequired),
        }
    }

    /// Decodes one later line into zero or more events appended to `out`.
    pub fn decode_event(
        &mut self,
        line: &[u8],
        meta: &Metadata,
        out: &mut Vec<Event>,
    ) -> Result<(), LineError> {
        let key = root_key(line).unwrap_or_default();
        match events::Kind::of_root_key(key) {
            Some(kind) => {
                self.with_root(line, |o, cfg| events::decode_event(kind, o, meta, cfg, out))
            }
            None => Err(LineError::UnknownType(
                String::from_utf8_lossy(key).into_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    fn depth_of(json: &str) -> R<()> {
        let mut buf = json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut buf).map_err(|e| syntax::syntax_error(&e))?;
        root_object(&tape.0).map(|_| ())
    }

    #[test]
    fn lines_nested_deeper_than_the_limit_are_decode_errors() {
        let nest = |n: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        // the root object is one level
        assert!(depth_of(&nest(MAX_DEPTH - 1)).is_ok());
        assert_eq!(
            depth_of(&nest(MAX_DEPTH)).unwrap_err().to_string(),
            "decode error: data read error: nesting deeper than 1000 levels"
        );
        assert!(depth_of(&nest(100_000)).is_err());
        // wide is not deep
        let wide = format!(r#"{{"a":[{}]}}"#, vec!["[[1]]"; 5000].join(","));
        assert!(depth_of(&wide).is_ok());
        assert!(depth_of("[1]").is_err());
    }
}
