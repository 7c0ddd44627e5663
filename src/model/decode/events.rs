//! Event lines: which root keys name which event type in each dialect, the
//! keys that make a root "set", and the one path every event line takes
//! (root check, field rules, first violation, defaults).
//!
//! Invariants: a line yields its events only when no rule failed (an
//! invalid line adds nothing to `out`); every yielded event gets the
//! node-name and environment defaults.

use super::error::{self, error};
use super::fields::*;
use super::log::log;
use super::metadata::finalize;
use super::metricset::metricset;
use super::span::{self, span};
use super::transaction::{self, transaction};
use super::*;

/// The event type of a line, by dialect.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Transaction,
    Span,
    Error,
    Metricset,
    Log,
    /// RUM v3 `x`: a transaction with its spans and metricsets.
    RumTransaction,
    /// RUM v3 `e`.
    RumError,
}

impl Kind {
    /// The event type named by a line's root key.
    pub(crate) fn of_root_key(key: &[u8]) -> Option<Kind> {
        Some(match key {
            b"transaction" => Kind::Transaction,
            b"span" => Kind::Span,
            b"error" => Kind::Error,
            b"metricset" => Kind::Metricset,
            b"log" => Kind::Log,
            b"x" => Kind::RumTransaction,
            b"e" => Kind::RumError,
            _ => return None,
        })
    }

    fn root_key(self) -> &'static str {
        match self {
            Kind::Transaction => "transaction",
            Kind::Span => "span",
            Kind::Error => "error",
            Kind::Metricset => "metricset",
            Kind::Log => "log",
            Kind::RumTransaction => "x",
            Kind::RumError => "e",
        }
    }

    /// The keys whose values make the root object set (unknown keys do
    /// not); `None`: any key (v2 logs have no fixed schema).
    fn known_keys(self) -> Option<&'static [&'static str]> {
        match self {
            Kind::Transaction => Some(&[
                "marks",
                "timestamp",
                "otel",
                "links",
                "trace_id",
                "id",
                "parent_id",
                "name",
                "type",
                "result",
                "dropped_spans_stats",
                "outcome",
                "faas",
                "session",
                "context",
                "experience",
                "span_count",
                "sample_rate",
                "duration",
                "sampled",
            ]),
            Kind::Span => Some(&[
                "timestamp",
                "otel",
                "id",
                "trace_id",
                "action",
                "name",
                "outcome",
                "child_ids",
                "parent_id",
                "links",
                "stacktrace",
                "type",
                "subtype",
                "transaction_id",
                "composite",
                "context",
                "start",
                "sample_rate",
                "duration",
                "sync",
            ]),
            Kind::Error => Some(&[
                "timestamp",
                "log",
                "culprit",
                "id",
                "parent_id",
                "trace_id",
                "transaction_id",
                "exception",
                "transaction",
                "context",
            ]),
            Kind::Metricset => Some(&[
                "timestamp",
                "samples",
                "span",
                "tags",
                "transaction",
                "service",
                "faas",
            ]),
            Kind::Log => None,
            Kind::RumTransaction => Some(&[
                "id", "tid", "pid", "n", "t", "d", "rt", "o", "sm", "sr", "yc", "k", "ses", "exp",
                "c", "y", "me",
            ]),
            Kind::RumError => Some(&[
                "id",
                "timestamp",
                "tid",
                "pid",
                "xid",
                "cl",
                "x",
                "ex",
                "log",
                "c",
            ]),
        }
    }
}

/// Decodes one event line and appends its events to `out`.
pub(crate) fn decode_event(
    kind: Kind,
    root: Obj<'_>,
    meta: &Metadata,
    cfg: &DecodeConfig,
    out: &mut Vec<Event>,
) -> R<()> {
    let key = kind.root_key();
    let o = match obj(root, key)? {
        Some(o) if is_set_known(o, kind.known_keys()) => o,
        _ => return Err(LineError::Validation(format!("'{key}' required"))),
    };
    let mut ctx = Ctx::default();
    ctx.push(key);
    let start = out.len();
    let decoded = match kind {
        Kind::Transaction => transaction(&mut ctx, &transaction::V2, o, meta, out),
        Kind::RumTransaction => transaction(&mut ctx, &transaction::V3, o, meta, out),
        Kind::Span => span(&mut ctx, &span::V2, o, meta).map(|(ev, _)| out.push(ev)),
        Kind::Error => error(&mut ctx, &error::V2, o, meta).map(|ev| out.push(ev)),
        Kind::RumError => error(&mut ctx, &error::V3, o, meta).map(|ev| out.push(ev)),
        Kind::Metricset => metricset(&mut ctx, o, meta).map(|ev| out.extend(ev)),
        Kind::Log => log(&mut ctx, o, meta).map(|ev| out.push(ev)),
    };
    if let Err(e) = decoded.and_then(|()| ctx.finish()) {
        out.truncate(start);
        return Err(e);
    }
    for ev in out.iter_mut().skip(start) {
        finalize(ev, cfg);
    }
    Ok(())
}
