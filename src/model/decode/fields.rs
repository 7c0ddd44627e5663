//! Value access and validation shared by every field rule: the validation
//! context [`Ctx`] (key path, first violation), typed reads of JSON values
//! (null is absent; a wrong type is a decode error naming the key), labels,
//! headers, timestamps and durations.
//!
//! Invariants: reads borrow from the parsed line and allocate only for what
//! they return; a violation message is built only for the first violation
//! of a line.

use super::*;
use crate::model::event::*;
use crate::model::shared::MAX_LEN;
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Validation context

/// Tracks the key path and the first validation violation of one line.
#[derive(Default)]
pub(crate) struct Ctx {
    /// Inline up to the schema's usual depth: no allocation per line.
    path: smallvec::SmallVec<[&'static str; 8]>,
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

pub(crate) fn type_err(key: &str, want: &str) -> LineError {
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

/// An array of strings (nulls become empty strings) as shared strings:
/// the source lines of stack frames.
pub(crate) fn v_shared_arr(k: &str, v: V<'_>) -> R<Vec<SharedStr>> {
    match v {
        V::Static(StaticNode::Null) => Ok(Vec::new()),
        V::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for e in a {
                match e {
                    V::String(s) => out.push(SharedStr::intern(s)),
                    V::Static(StaticNode::Null) => out.push(SharedStr::default()),
                    _ => return Err(type_err(k, "array of strings")),
                }
            }
            Ok(out)
        }
        _ => Err(type_err(k, "array")),
    }
}

/// [`v_shared_arr`] of the field `k`; absent or null is empty.
pub(crate) fn shared_arr(o: Obj<'_>, k: &str) -> R<Vec<SharedStr>> {
    get(o, k).map_or(Ok(Vec::new()), |v| v_shared_arr(k, v))
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

/// [`string`] for the fields the model keeps as [`SharedStr`].
pub(crate) fn shared(o: Obj<'_>, k: &str) -> R<SharedStr> {
    Ok(SharedStr::intern(opt_str(o, k)?.unwrap_or_default()))
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

/// A timestamp field: integer µs since the epoch or an RFC 3339 string; ns.
pub(crate) fn timestamp(o: Obj<'_>, k: &str) -> R<Option<i64>> {
    match get(o, k) {
        None => Ok(None),
        Some(V::Static(StaticNode::I64(i))) => Ok(Some(i.saturating_mul(1000))),
        Some(V::Static(StaticNode::U64(u))) => Ok(Some(
            i64::try_from(u).unwrap_or(i64::MAX).saturating_mul(1000),
        )),
        Some(V::Static(StaticNode::F64(f))) => Ok(Some((f * 1000.0) as i64)),
        Some(V::String(s)) => crate::model::timestamp::parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| {
                LineError::Decode(format!("{k}: failed to parse the provided time string"))
            }),
        Some(_) => Err(LineError::Decode(format!(
            "{k}: invalid input type for timestamp"
        ))),
    }
}

/// Float ms → integer ns, truncated in f64 as apm-server does.
pub(crate) fn ms_to_ns(ms: f64) -> i64 {
    (ms * 1_000_000.0).trunc() as i64
}

/// Decodes and validates a labels map (`labels`, `tags`) into `into`: string, bool
/// (stored as text) or number values; strings at most 1024 characters.
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

/// Canonical HTTP header name (Go `textproto.CanonicalMIMEHeaderKey`:
/// `content-type` → `Content-Type`; a name with bytes outside the token set
/// is kept as sent), as a shared string. Names that fit the shared-string
/// cache are canonicalised on the stack, without allocating.
fn header_name(k: &str) -> SharedStr {
    let valid = k
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid || k.is_empty() {
        return SharedStr::intern(k);
    }
    let canonical = k.bytes().scan(true, |upper, b| {
        let c = if *upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        };
        *upper = b == b'-';
        Some(c)
    });
    let mut buf = [0u8; MAX_LEN];
    let name = match buf.get_mut(..k.len()) {
        Some(out) => {
            out.iter_mut().zip(canonical).for_each(|(o, c)| *o = c);
            std::str::from_utf8(out).ok().map(SharedStr::intern)
        }
        None => String::from_utf8(canonical.collect())
            .ok()
            .map(SharedStr::from),
    };
    // valid names are ASCII, so both conversions succeed
    name.unwrap_or_else(|| SharedStr::intern(k))
}

/// A headers object: values string or array of strings (else decode error).
pub(crate) fn headers(o: Obj<'_>, k: &str) -> R<Headers> {
    let Some(m) = obj(o, k)? else {
        return Ok(Vec::new());
    };
    let mut out: Headers = Vec::with_capacity(m.len());
    for (key, v) in m.iter() {
        let mut vals = HeaderValues::new();
        match v {
            V::String(s) => vals.push(SharedStr::intern(s)),
            V::Array(a) => {
                for e in a.iter() {
                    match e {
                        V::String(s) => vals.push(SharedStr::intern(s)),
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
        let name = header_name(key);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => existing.extend(vals),
            None => out.push((name, vals)),
        }
    }
    Ok(out)
}

/// [`str_field`] for the low-cardinality fields the model keeps as
/// [`SharedStr`] (span and transaction names, types, outcomes, destinations).
pub(crate) fn shared_field(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<SharedStr> {
    let s = opt_str(o, k)?;
    ctx.max1024(k, s);
    Ok(SharedStr::intern(s.unwrap_or_default()))
}

pub(crate) fn str_field(ctx: &mut Ctx, o: Obj<'_>, k: &'static str) -> R<String> {
    let s = opt_str(o, k)?;
    ctx.max1024(k, s);
    Ok(s.unwrap_or_default().to_owned())
}

pub(crate) fn nested_str(
    ctx: &mut Ctx,
    o: Obj<'_>,
    outer: &'static str,
    k: &'static str,
) -> R<String> {
    let Some(m) = set_obj(o, outer)? else {
        return Ok(String::new());
    };
    ctx.push(outer);
    let s = str_field(ctx, m, k)?;
    ctx.pop();
    Ok(s)
}

pub(crate) fn merge_labels(ev: &mut Event, l: Option<Labels>) {
    if let Some(l) = l {
        if l.is_empty() {
            return;
        }
        let dst = Arc::make_mut(&mut ev.labels);
        for (k, v) in l.strings {
            dst.set_string(&k, v);
        }
        for (k, v) in l.numbers {
            dst.set_number(&k, v);
        }
    }
}

/// `representative_count` from `sample_rate`: 1/r for r > 0, none for 0,
/// and when absent 1 if `default_one`.
pub(crate) fn rep_count(sample_rate: Option<f64>, default_one: bool) -> Option<f64> {
    match sample_rate {
        None => default_one.then_some(1.0),
        Some(r) if r > 0.0 => Some(1.0 / r),
        Some(_) => None,
    }
}

/// One element of an array of objects under `k`: the object when it is set;
/// `None` after recording `<k> slice element required` when it is empty or
/// null; a decode error for any other type.
pub(crate) fn set_element<'v>(ctx: &mut Ctx, k: &str, v: V<'v>) -> R<Option<Obj<'v>>> {
    match v {
        V::Object(o) if o.values().any(is_set) => Ok(Some(o)),
        V::Object(_) | V::Static(StaticNode::Null) => {
            ctx.fail(|| format!("{k} slice element required"));
            Ok(None)
        }
        _ => Err(LineError::Decode(format!("{k}: expected object"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_canonicalised_as_go_does_at_any_length() {
        assert_eq!(header_name("content-type"), "Content-Type");
        assert_eq!(header_name("X-FORWARDED-FOR"), "X-Forwarded-For");
        assert_eq!(header_name("x--y"), "X--Y");
        assert_eq!(header_name("has space"), "has space");
        assert_eq!(header_name("ümlaut-key"), "ümlaut-key");
        assert_eq!(header_name(""), "");
        let long = format!("x-{}", "ab-".repeat(MAX_LEN));
        let expected = format!("X-{}", "Ab-".repeat(MAX_LEN));
        assert_eq!(header_name(&long), expected.as_str());
    }
}
