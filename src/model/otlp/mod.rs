//! OTLP translation: protobuf `Export*ServiceRequest` messages (traces,
//! metrics, logs) → the same model [`Event`]s the intake decoders produce,
//! so they become the same documents in the same data streams.
//!
//! Pure: no config, no HTTP. Invariants: nothing here panics on client
//! bytes; a message that does not decode is one error for the whole request;
//! an item that cannot be translated (e.g. an id of the wrong length) is
//! counted as rejected and the rest of the message is kept; attribute lists
//! are read up to [`MAX_ATTRIBUTES`] per resource/item and `AnyValue`s are
//! flattened up to [`MAX_DEPTH`] levels, so an event's size stays bounded by
//! the message's.

mod logs;
mod metrics;
mod resource;
mod traces;

use super::event::{Json, Labels};
use super::{Event, RequestBase};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};

/// Attributes read per resource, scope or item; later ones are ignored.
pub const MAX_ATTRIBUTES: usize = 1024;
/// `AnyValue` nesting flattened into a label or message; deeper parts are dropped.
pub const MAX_DEPTH: usize = 8;

/// Which OTLP signal a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    /// The signal's name as used in paths and telemetry (`traces`, `metrics`, `logs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// Why a whole OTLP message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    /// The bytes are not a valid protobuf message of the signal's type.
    #[error("failed to decode OTLP {signal} request: {reason}")]
    Decode {
        signal: &'static str,
        reason: String,
    },
}

/// An item of a message that was not translated, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub message: String,
}

/// Decodes one protobuf message of `signal` and appends its events to `out`;
/// returns the items that were refused (the others are in `out`).
pub fn decode_otlp(
    signal: Signal,
    bytes: &[u8],
    base: &RequestBase,
    out: &mut Vec<Event>,
) -> Result<Vec<Rejected>, OtlpError> {
    use opentelemetry_proto::tonic::collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    };
    use prost::Message;
    let err = |e: prost::DecodeError| OtlpError::Decode {
        signal: signal.as_str(),
        reason: e.to_string(),
    };
    let mut rejected = Vec::new();
    match signal {
        Signal::Traces => {
            let m = ExportTraceServiceRequest::decode(bytes).map_err(err)?;
            traces::translate(m, base, out, &mut rejected);
        }
        Signal::Metrics => {
            let m = ExportMetricsServiceRequest::decode(bytes).map_err(err)?;
            metrics::translate(m, base, out, &mut rejected);
        }
        Signal::Logs => {
            let m = ExportLogsServiceRequest::decode(bytes).map_err(err)?;
            logs::translate(m, base, out, &mut rejected);
        }
    }
    Ok(rejected)
}

/// Lower-case hex of an OTLP id that must be `len` bytes (or absent).
/// `Err` names the field when the length is wrong.
pub(crate) fn hex_id(bytes: &[u8], len: usize, field: &str) -> Result<String, Rejected> {
    if bytes.is_empty() {
        return Ok(String::new());
    }
    if bytes.len() != len {
        return Err(Rejected {
            message: format!("{field} must be {len} bytes, got {}", bytes.len()),
        });
    }
    let mut s = String::with_capacity(len * 2);
    for b in bytes {
        s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    Ok(s)
}

/// The attributes of an item, capped at [`MAX_ATTRIBUTES`].
pub(crate) fn attrs(list: &[KeyValue]) -> impl Iterator<Item = (&str, &AnyValue)> {
    list.iter()
        .take(MAX_ATTRIBUTES)
        .filter_map(|kv| kv.value.as_ref().map(|v| (kv.key.as_str(), v)))
}

/// A string attribute's value (other types are not strings).
pub(crate) fn as_str(v: &AnyValue) -> Option<&str> {
    match &v.value {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// An integer attribute's value (also from an integral string, as some SDKs send).
pub(crate) fn as_int(v: &AnyValue) -> Option<i64> {
    match &v.value {
        Some(Value::IntValue(i)) => Some(*i),
        Some(Value::StringValue(s)) => s.parse().ok(),
        _ => None,
    }
}

/// Any value as text: strings as they are, others in their JSON form.
pub(crate) fn to_text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        _ => {
            let mut out = String::new();
            write_json(&to_json(v, 0), &mut out);
            out
        }
    }
}

/// Any value as [`Json`], nesting cut at [`MAX_DEPTH`].
pub(crate) fn to_json(v: &AnyValue, depth: usize) -> Json {
    if depth >= MAX_DEPTH {
        return Json::Null;
    }
    match &v.value {
        // A profiles string-table index: no meaning outside profiles.
        None | Some(Value::StringValueStrindex(_)) => Json::Null,
        Some(Value::StringValue(s)) => Json::Str(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::Num(*i as f64),
        Some(Value::DoubleValue(d)) => Json::Num(*d),
        Some(Value::BytesValue(b)) => Json::Str(hex_lossy(b)),
        Some(Value::ArrayValue(a)) => Json::Arr(
            a.values
                .iter()
                .take(MAX_ATTRIBUTES)
                .map(|x| to_json(x, depth + 1))
                .collect(),
        ),
        Some(Value::KvlistValue(kv)) => Json::Obj(
            kv.values
                .iter()
                .take(MAX_ATTRIBUTES)
                .map(|x| {
                    (
                        x.key.clone(),
                        x.value
                            .as_ref()
                            .map_or(Json::Null, |y| to_json(y, depth + 1)),
                    )
                })
                .collect(),
        ),
    }
}

fn hex_lossy(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write_json(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(n) => out.push_str(&n.to_string()),
        Json::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Json::Arr(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(x, out);
            }
            out.push(']');
        }
        Json::Obj(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(&Json::Str(k.clone()), out);
                out.push(':');
                write_json(x, out);
            }
            out.push('}');
        }
    }
}

/// Folds an attribute into labels as apm-data does: strings and booleans
/// into `labels`, numbers into `numeric_labels`, dots in keys as `_`;
/// arrays by the type of their first element (elements of other types are
/// left out); maps are not labels.
pub(crate) fn set_label(l: &mut Labels, key: &str, v: &AnyValue) {
    let k = key.replace('.', "_");
    match &v.value {
        Some(Value::StringValue(s)) => l.set_string(&k, s.clone()),
        Some(Value::BoolValue(b)) => l.set_string(&k, b.to_string()),
        Some(Value::IntValue(i)) => l.set_number(&k, *i as f64),
        Some(Value::DoubleValue(d)) => l.set_number(&k, *d),
        Some(Value::ArrayValue(a)) => {
            let items = a.values.iter().take(MAX_ATTRIBUTES).map(|x| &x.value);
            match a.values.first().and_then(|x| x.value.as_ref()) {
                Some(Value::StringValue(_)) => l.set_string_list(
                    &k,
                    items
                        .filter_map(|x| match x {
                            Some(Value::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
                Some(Value::BoolValue(_)) => l.set_string_list(
                    &k,
                    items
                        .filter_map(|x| match x {
                            Some(Value::BoolValue(b)) => Some(b.to_string()),
                            _ => None,
                        })
                        .collect(),
                ),
                Some(Value::IntValue(_)) => l.set_number_list(
                    &k,
                    items
                        .filter_map(|x| match x {
                            Some(Value::IntValue(i)) => Some(*i as f64),
                            _ => None,
                        })
                        .collect(),
                ),
                Some(Value::DoubleValue(_)) => l.set_number_list(
                    &k,
                    items
                        .filter_map(|x| match x {
                            Some(Value::DoubleValue(d)) => Some(*d),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => {}
            }
        }
        _ => {}
    }
}

/// Adds item-level labels to an event (copying its shared labels on write).
pub(crate) fn merge_labels(ev: &mut Event, labels: Labels) {
    if labels.is_empty() {
        return;
    }
    let l = std::sync::Arc::make_mut(&mut ev.labels);
    for (k, v) in labels.strings {
        l.set_string(&k, v);
    }
    for (k, v) in labels.numbers {
        l.set_number(&k, v);
    }
    for (k, v) in labels.string_lists {
        l.set_string_list(&k, v);
    }
    for (k, v) in labels.number_lists {
        l.set_number_list(&k, v);
    }
}

#[cfg(test)]
mod tests;
