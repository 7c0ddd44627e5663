//! TODO

use super::error::error;
use super::fields::*;
use super::log::log;
use super::metadata::finalize;
use super::metricset::metricset;
use super::span::span;
use super::transaction::{rum_transaction, transaction};
use super::*;
use crate::model::event::*;

/// Which v2 event a line holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Transaction,
    Span,
    Error,
    Metricset,
    Log,
}

// ---------------------------------------------------------------------------
// events

/// Decodes one v2 event line and appends the result to `out`.
pub(crate) fn decode_event(
    kind: Kind,
    root: Obj<'_>,
    meta: &Metadata,
    cfg: &DecodeConfig,
    out: &mut Vec<Event>,
) -> R<()> {
    let key = match kind {
        Kind::Transaction => "transaction",
        Kind::Span => "span",
        Kind::Error => "error",
        Kind::Metricset => "metricset",
        Kind::Log => "log",
    };
    let known: Option<&[&str]> = match kind {
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
    };
    let o = match obj(root, key)? {
        Some(o) if is_set_known(o, known) => o,
        _ => return Err(LineError::Validation(format!("'{key}' required"))),
    };
    let mut ctx = Ctx::default();
    ctx.push(key);
    let ev = match kind {
        Kind::Transaction => Some(transaction(&mut ctx, o, meta)?),
        Kind::Span => Some(span(&mut ctx, o, meta)?),
        Kind::Error => Some(error(&mut ctx, &error::V2, o, meta)?),
        Kind::Metricset => metricset(&mut ctx, o, meta)?,
        Kind::Log => Some(log(&mut ctx, o, meta)?),
    };
    ctx.finish()?;
    if let Some(mut ev) = ev {
        finalize(&mut ev, cfg);
        out.push(ev);
    }
    Ok(())
}

/// Decodes a v3 `x` (transaction) or `e` (error) line.
pub(crate) fn rum_event(
    is_tx: bool,
    root: Obj<'_>,
    meta: &Metadata,
    cfg: &DecodeConfig,
    out: &mut Vec<Event>,
) -> R<()> {
    let key = if is_tx { "x" } else { "e" };
    let known: &[&str] = if is_tx {
        &[
            "id", "tid", "pid", "n", "t", "d", "rt", "o", "sm", "sr", "yc", "k", "ses", "exp", "c",
            "y", "me",
        ]
    } else {
        &[
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
        ]
    };
    let o = match obj(root, key)? {
        Some(o) if is_set_known(o, Some(known)) => o,
        _ => return Err(LineError::Validation(format!("'{key}' required"))),
    };
    let mut ctx = Ctx::default();
    ctx.push(key);
    let start = out.len();
    if is_tx {
        rum_transaction(&mut ctx, o, meta, out)?;
    } else {
        out.push(error(&mut ctx, &error::V3, o, meta)?);
    }
    if let Err(e) = ctx.finish() {
        out.truncate(start);
        return Err(e);
    }
    for ev in out.iter_mut().skip(start) {
        finalize(ev, cfg);
    }
    Ok(())
}
