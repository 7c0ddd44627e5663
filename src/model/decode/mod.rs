//! Line decoding: the [`Decoder`], the root-key scan (intake.md §5.2) and the
//! value-access and validation helpers shared by the v2 and v3 decoders.
//!
//! Invariants: a line is parsed once with simd-json into a borrowed value
//! tree over the decoder's scratch buffer (only the first JSON value of the
//! line is parsed; trailing bytes are ignored). Type mismatches are decode
//! errors returned at once; schema violations are recorded in [`Ctx`] (the
//! first one wins, in upstream struct order) and reported after decoding, so
//! a decode error anywhere in the line takes precedence. Nothing here panics
//! on client data.

pub(crate) mod v2;
pub(crate) mod v3;

use super::event::{Headers, Json, Labels, Metadata};
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

#[cfg(test)]
mod depth_tests {
    use super::*;

    fn depth_of(json: &str) -> R<()> {
        let mut buf = json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut buf).map_err(|e| LineError::Decode(e.to_string()))?;
        root_object(&tape.0).map(|_| ())
    }

    #[test]
    fn nesting_limit() {
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
            return Err(LineError::Decode(err.to_string()));
        }
        self.retry.clear();
        self.retry.extend_from_slice(line.get(..n).unwrap_or(line));
        let r = match simd_json::fill_tape(&mut self.retry, &mut self.buffers, &mut tape) {
            Ok(()) => root_object(&tape.0).and_then(|o| f(o, &self.cfg)),
            Err(e) => Err(LineError::Decode(e.to_string())),
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
            Some(b"metadata") => self.with_root(line, |o, cfg| v2::decode_metadata(o, base, cfg)),
            Some(b"m") => self.with_root(line, |o, cfg| v3::decode_metadata(o, base, cfg)),
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
        match key {
            b"transaction" | b"span" | b"error" | b"metricset" | b"log" => {
                let kind = match key {
                    b"transaction" => v2::Kind::Transaction,
                    b"span" => v2::Kind::Span,
                    b"error" => v2::Kind::Error,
                    b"metricset" => v2::Kind::Metricset,
                    _ => v2::Kind::Log,
                };
                self.with_root(line, |o, cfg| v2::decode_event(kind, o, meta, cfg, out))
            }
            b"x" | b"e" => {
                let is_tx = key == b"x";
                self.with_root(line, |o, cfg| v3::decode_event(is_tx, o, meta, cfg, out))
            }
            _ => Err(LineError::UnknownType(
                String::from_utf8_lossy(key).into_owned(),
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Validation context

/// Tracks the key path and the first validation violation of one line.
#[derive(Default)]
pub(crate) struct Ctx {
    path: Vec<&'static str>,
    violation: Option<String>,
}

impl Ctx {
    pub(crate) fn push(&mut self, k: &'static str) {
        self.path.push(k);
    }
    pub(crate) fn pop(&mut self) {
        self.path.pop();
    }
    /// Records `msg` (prefixed with the current path) unless a violation was already recorded.
    pub(crate) fn fail(&mut self, msg: impl FnOnce() -> String) {
        if self.violation.is_none() {
            let mut s = String::new();
            for p in &self.path {
                s.push_str(p);
                s.push_str(": ");
            }
            s.push_str(&msg());
            self.violation = Some(s);
        }
    }
    pub(crate) fn failed(&self) -> bool {
        self.violation.is_some()
    }
    /// Converts a recorded violation into the line error.
    pub(crate) fn finish(self) -> R<()> {
        match self.violation {
            Some(v) => Err(LineError::Validation(v)),
            None => Ok(()),
        }
    }
    /// `'<key>' required` unless `present`.
    pub(crate) fn required(&mut self, key: &str, present: bool) {
        if !present {
            self.fail(|| format!("'{key}' required"));
        }
    }
    /// maxLength in code points.
    pub(crate) fn max_len(&mut self, key: &str, s: Option<&str>, n: usize) {
        if let Some(s) = s {
            if s.len() > n && s.chars().count() > n {
                self.fail(|| format!("'{key}': validation rule 'maxLength({n})' violated"));
            }
        }
    }
    pub(crate) fn max1024(&mut self, key: &str, s: Option<&str>) {
        self.max_len(key, s, 1024)
    }
    /// `'<key>': validation rule 'min(<n>)' violated` when `v < n`.
    pub(crate) fn min(&mut self, key: &str, v: Option<f64>, n: i64) {
        if let Some(v) = v {
            if v < n as f64 {
                self.fail(|| format!("'{key}': validation rule 'min({n})' violated"));
            }
        }
    }
    pub(crate) fn outcome(&mut self, v: Option<&str>) {
        if let Some(v) = v {
            if !v.is_empty() && !matches!(v, "success" | "failure" | "unknown") {
                self.fail(|| "'outcome': validation rule 'enum(enumOutcome)' violated".into());
            }
        }
    }
    /// service name pattern `^[a-zA-Z0-9 _-]+$` (checked only when non-empty).
    pub(crate) fn service_name_pattern(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            if !v.is_empty()
                && !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'-'))
            {
                self.fail(|| {
                    format!("'{key}': validation rule 'pattern(patternAlphaNumericExt)' violated")
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Value access (null == absent; wrong JSON type == decode error)

fn type_err(key: &str, want: &str) -> LineError {
    LineError::Decode(format!("{key}: expected {want}"))
}

/// The value of the last `k` entry (duplicate keys: last wins, like the
/// upstream decoder; simd-json keeps duplicates).
pub(crate) fn lookup<'v>(o: Obj<'v>, k: &str) -> Option<V<'v>> {
    let kb = k.as_bytes();
    let mut nodes = o.nodes;
    let mut left = o.len;
    let mut found: Option<&'v [Node<'v>]> = None;
    while left > 0 {
        left -= 1;
        let Some((Node::String(key), rest)) = nodes.split_first() else {
            break;
        };
        let kk = key.as_bytes();
        if kk.len() == kb.len() && kk.first() == kb.first() && kk == kb {
            found = Some(rest);
        }
        nodes = rest.get(node_count(rest.first())..).unwrap_or_default();
    }
    found.map(view)
}

/// The value at `k`, `None` when absent or null.
pub(crate) fn get<'v>(o: Obj<'v>, k: &str) -> Option<V<'v>> {
    match lookup(o, k) {
        Some(V::Static(StaticNode::Null)) | None => None,
        Some(v) => Some(v),
    }
}

/// "Set" in the upstream sense: non-null, non-empty container, any scalar.
pub(crate) fn is_set(v: V<'_>) -> bool {
    match v {
        V::Static(StaticNode::Null) => false,
        V::Static(_) | V::String(_) => true,
        V::Array(a) => !a.is_empty(),
        V::Object(o) => o.values().any(is_set),
    }
}

/// Typed views of one value (`null` → `None`, wrong type → decode error).
pub(crate) fn v_str<'v>(k: &str, v: V<'v>) -> R<Option<&'v str>> {
    match v {
        V::Static(StaticNode::Null) => Ok(None),
        V::String(s) => Ok(Some(s)),
        _ => Err(type_err(k, "string")),
    }
}

pub(crate) fn v_int(k: &str, v: V<'_>) -> R<Option<i64>> {
    match v {
        V::Static(StaticNode::Null) => Ok(None),
        V::Static(StaticNode::I64(i)) => Ok(Some(i)),
        V::Static(StaticNode::U64(u)) => i64::try_from(u).map(Some).map_err(|_| type_err(k, "int")),
        _ => Err(type_err(k, "integer")),
    }
}

pub(crate) fn v_bool(k: &str, v: V<'_>) -> R<Option<bool>> {
    match v {
        V::Static(StaticNode::Null) => Ok(None),
        V::Static(StaticNode::Bool(b)) => Ok(Some(b)),
        _ => Err(type_err(k, "bool")),
    }
}

pub(crate) fn v_str_arr(k: &str, v: V<'_>) -> R<Vec<String>> {
    match v {
        V::Static(StaticNode::Null) => Ok(Vec::new()),
        V::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for e in a {
                match e {
                    V::String(s) => out.push(s.to_owned()),
                    V::Static(StaticNode::Null) => out.push(String::new()),
                    _ => return Err(type_err(k, "array of strings")),
                }
            }
            Ok(out)
        }
        _ => Err(type_err(k, "array")),
    }
}

pub(crate) fn v_json_obj(k: &str, v: V<'_>) -> R<Option<Json>> {
    match v {
        V::Static(StaticNode::Null) => Ok(None),
        V::Object(m) if m.is_empty() => Ok(None),
        V::Object(m) => Ok(Some(Json::Obj(
            m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect(),
        ))),
        _ => Err(type_err(k, "object")),
    }
}

/// "Set" over the schema's keys only: unknown keys do not make an event
/// root set (`{"metadata":{"foo":1}}` is `'metadata' required`). `None`
/// means every key counts (schema-less roots such as v2 logs).
pub(crate) fn is_set_known(o: Obj<'_>, known: Option<&[&str]>) -> bool {
    match known {
        Some(keys) => o.iter().any(|(k, v)| keys.contains(&k) && is_set(v)),
        None => o.values().any(is_set),
    }
}

pub(crate) fn obj<'v>(o: Obj<'v>, k: &str) -> R<Option<Obj<'v>>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Object(m)) => Ok(Some(m)),
        Some(_) => Err(type_err(k, "object")),
    }
}

/// Like [`obj`] but `None` also when the object is not set.
pub(crate) fn set_obj<'v>(o: Obj<'v>, k: &str) -> R<Option<Obj<'v>>> {
    Ok(obj(o, k)?.filter(|m| m.values().any(is_set)))
}

pub(crate) fn opt_str<'v>(o: Obj<'v>, k: &str) -> R<Option<&'v str>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_err(k, "string")),
    }
}

pub(crate) fn string(o: Obj<'_>, k: &str) -> R<String> {
    Ok(opt_str(o, k)?.map(str::to_owned).unwrap_or_default())
}

pub(crate) fn int(o: Obj<'_>, k: &str) -> R<Option<i64>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Static(StaticNode::I64(i))) => Ok(Some(i)),
        Some(V::Static(StaticNode::U64(u))) => {
            i64::try_from(u).map(Some).map_err(|_| type_err(k, "int"))
        }
        Some(_) => Err(type_err(k, "integer")),
    }
}

pub(crate) fn num(o: Obj<'_>, k: &str) -> R<Option<f64>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Static(StaticNode::I64(i))) => Ok(Some(i as f64)),
        Some(V::Static(StaticNode::U64(u))) => Ok(Some(u as f64)),
        Some(V::Static(StaticNode::F64(f))) => Ok(Some(f)),
        Some(_) => Err(type_err(k, "number")),
    }
}

pub(crate) fn boolean(o: Obj<'_>, k: &str) -> R<Option<bool>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Static(StaticNode::Bool(b))) => Ok(Some(b)),
        Some(_) => Err(type_err(k, "bool")),
    }
}

pub(crate) fn arr<'v>(o: Obj<'v>, k: &str) -> R<Option<Arr<'v>>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Array(a)) => Ok(Some(a)),
        Some(_) => Err(type_err(k, "array")),
    }
}

pub(crate) fn str_arr(o: Obj<'_>, k: &str) -> R<Vec<String>> {
    let Some(a) = arr(o, k)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(a.len());
    for v in a {
        match v {
            V::String(s) => out.push(s.to_string()),
            V::Static(StaticNode::Null) => out.push(String::new()),
            _ => return Err(type_err(k, "array of strings")),
        }
    }
    Ok(out)
}

/// A string-or-integer field (`user.id`, exception `code`) as text.
pub(crate) fn str_or_int(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<Option<String>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::String(s)) => {
            ctx.max1024(k, Some(s));
            Ok(Some(s.to_string()))
        }
        Some(V::Static(StaticNode::I64(i))) => Ok(Some(i.to_string())),
        Some(V::Static(StaticNode::U64(i))) => Ok(Some(i.to_string())),
        Some(V::Static(StaticNode::F64(_))) => {
            ctx.fail(|| format!("'{k}': validation rule 'inputTypes(string;int)' violated"));
            Ok(None)
        }
        Some(_) => {
            ctx.fail(|| format!("'{k}': validation rule 'inputTypes(string;int)' violated "));
            Ok(None)
        }
    }
}

/// A timestamp field: integer µs since the epoch or an RFC 3339 string (§5.8); ns.
pub(crate) fn timestamp(o: Obj<'_>, k: &str) -> R<Option<i64>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Static(StaticNode::I64(i))) => Ok(Some(i.saturating_mul(1000))),
        Some(V::Static(StaticNode::U64(u))) => Ok(Some(
            i64::try_from(u).unwrap_or(i64::MAX).saturating_mul(1000),
        )),
        Some(V::Static(StaticNode::F64(f))) => Ok(Some((f * 1000.0) as i64)),
        Some(V::String(s)) => super::timestamp::parse_rfc3339(s).map(Some).ok_or_else(|| {
            LineError::Decode(format!("{k}: failed to parse the provided time string"))
        }),
        Some(_) => Err(LineError::Decode(format!(
            "{k}: invalid input type for timestamp"
        ))),
    }
}

/// Float ms → integer ns, truncated in f64 (§12.3).
pub(crate) fn ms_to_ns(ms: f64) -> i64 {
    (ms * 1_000_000.0).trunc() as i64
}

/// Decodes and validates a labels map (`labels`, `tags`) into `into` (§5.3).
pub(crate) fn labels(
    ctx: &mut Ctx,
    o: Obj<'_>,
    k: &'static str,
    into: &mut Option<Labels>,
) -> R<()> {
    let Some(m) = obj(o, k)? else { return Ok(()) };
    if m.is_empty() {
        return Ok(());
    }
    let l = into.get_or_insert_with(Labels::default);
    for (key, v) in m.iter() {
        match v {
            V::Static(StaticNode::Null) => {}
            V::String(s) => {
                if s.len() > 1024 && s.chars().count() > 1024 {
                    ctx.fail(|| format!("'{k}': validation rule 'maxLengthVals(1024)' violated"));
                }
                l.set_string(key, s.to_string());
            }
            V::Static(StaticNode::Bool(b)) => l.set_string(key, if b { "true" } else { "false" }.into()),
            V::Static(StaticNode::I64(i)) => l.set_number(key, i as f64),
            V::Static(StaticNode::U64(i)) => l.set_number(key, i as f64),
            V::Static(StaticNode::F64(f)) => l.set_number(key, f),
            _ => ctx.fail(|| format!("'{k}': validation rule 'inputTypesVals(string;bool;number)' violated for key {key}")),
        }
    }
    Ok(())
}

/// Converts an arbitrary JSON value (numbers become floats).
pub(crate) fn to_json(v: V<'_>) -> Json {
    match v {
        V::Static(StaticNode::Null) => Json::Null,
        V::Static(StaticNode::Bool(b)) => Json::Bool(b),
        V::Static(StaticNode::I64(i)) => Json::Num(i as f64),
        V::Static(StaticNode::U64(i)) => Json::Num(i as f64),
        V::Static(StaticNode::F64(f)) => Json::Num(f),
        #[allow(unreachable_patterns)]
        V::Static(_) => Json::Null,
        V::String(s) => Json::Str(s.to_string()),
        V::Array(a) => Json::Arr(a.iter().map(to_json).collect()),
        V::Object(o) => Json::Obj(o.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
    }
}

/// An object-valued field as [`Json`], `None` when absent or empty.
pub(crate) fn json_obj(o: Obj<'_>, k: &str) -> R<Option<Json>> {
    Ok(obj(o, k)?
        .filter(|m| !m.is_empty())
        .map(|m| Json::Obj(m.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect())))
}

/// Canonical HTTP header name (Go `textproto.CanonicalMIMEHeaderKey`).
pub(crate) fn canonical_header(k: &str) -> String {
    let valid = k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid || k.is_empty() {
        return k.to_owned();
    }
    let mut out = String::with_capacity(k.len());
    let mut upper = true;
    for c in k.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// A headers object: values string or array of strings (else decode error).
pub(crate) fn headers(o: Obj<'_>, k: &str) -> R<Headers> {
    let Some(m) = obj(o, k)? else {
        return Ok(Vec::new());
    };
    let mut out: Headers = Vec::new();
    for (key, v) in m.iter() {
        let mut vals: Vec<String> = Vec::new();
        match v {
            V::String(s) => vals.push(s.to_string()),
            V::Array(a) => {
                for e in a.iter() {
                    match e {
                        V::String(s) => vals.push(s.to_string()),
                        _ => return Err(type_err(k, "header value string or array of strings")),
                    }
                }
            }
            V::Static(StaticNode::Null) => {}
            _ => return Err(type_err(k, "header value string or array of strings")),
        }
        if vals.is_empty() {
            continue;
        }
        let name = canonical_header(key);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => existing.extend(vals),
            None => out.push((name, vals)),
        }
    }
    Ok(out)
}
