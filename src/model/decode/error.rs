//! Error events (v2 `error`, RUM v3 `e`): one set of field rules, run in each
//! dialect's order under that dialect's key names.
//!
//! Invariants: a rule reads its fields (type mismatches return at once) and
//! records its validation violations in [`Ctx`]; the first violation in the
//! dialect's rule order is the one reported, exactly as the upstream decoders
//! check their structs. No rule allocates beyond the values it keeps.

use super::context::{context, rum_context};
use super::fields::*;
use super::stacktrace::{frames, rum_frames};
use super::*;
use crate::model::event::*;
use crate::model::grouping::grouping_key;

/// Decodes a `stacktrace` array under key `k`.
pub(crate) type FramesRule = fn(&mut Ctx, Obj<'_>, &'static str) -> R<Vec<Frame>>;
/// Decodes an event's `context`: (response status code, custom).
pub(crate) type ContextRule = fn(&mut Ctx, Obj<'_>, &mut Event) -> R<(Option<i64>, Option<Json>)>;

/// The field rules of an error line; each dialect lists them in its order.
#[derive(Clone, Copy)]
pub(crate) enum ErrorRule {
    Timestamp,
    Context,
    Culprit,
    /// Reads the exception and log objects; one of them must be set.
    ExceptionOrLog,
    Exception,
    Log,
    Id,
    /// Reads parent, trace and transaction ids (decode errors in this order).
    ReadIds,
    ParentId,
    TraceId,
    TransactionId,
    TransactionRef,
}

/// The trailing fields of an exception, in a dialect's order.
#[derive(Clone, Copy)]
pub(crate) enum ExceptionRule {
    Stacktrace,
    Message,
    Module,
    Type,
    Handled,
}

/// The fields of an error's `transaction` reference, in a dialect's order.
#[derive(Clone, Copy)]
pub(crate) enum TransactionRefRule {
    Name,
    Type,
    Sampled,
}

/// One dialect's key names and rule order for error lines.
pub(crate) struct ErrorDialect {
    pub order: &'static [ErrorRule],
    pub timestamp: &'static str,
    pub culprit: &'static str,
    pub exception: &'static str,
    pub log: &'static str,
    pub id: &'static str,
    pub parent_id: &'static str,
    pub trace_id: &'static str,
    pub transaction_id: &'static str,
    pub transaction: &'static str,
    pub transaction_ref: TransactionRefKeys,
    pub exc: ExceptionKeys,
    pub log_keys: LogKeys,
    pub frames: FramesRule,
    pub context: ContextRule,
    /// v3 keeps `transaction.id` only when the transaction reference is set.
    pub transaction_id_needs_ref: bool,
    /// v2 also writes the transaction id as `span.id`.
    pub span_id_is_transaction_id: bool,
}

pub(crate) struct TransactionRefKeys {
    pub order: &'static [TransactionRefRule],
    pub name: &'static str,
    pub type_: &'static str,
    pub sampled: &'static str,
}

pub(crate) struct ExceptionKeys {
    pub tail: &'static [ExceptionRule],
    pub message: &'static str,
    pub type_: &'static str,
    pub attributes: &'static str,
    pub code: &'static str,
    pub cause: &'static str,
    pub stacktrace: &'static str,
    pub module: &'static str,
    pub handled: &'static str,
}

pub(crate) struct LogKeys {
    pub level: &'static str,
    pub logger_name: &'static str,
    pub message: &'static str,
    pub param_message: &'static str,
    pub stacktrace: &'static str,
    /// v3 limits the log message to 1024 characters; v2 does not.
    pub message_max_len: bool,
    /// `error.log.logger_name` when none is sent.
    pub default_logger: &'static str,
}

/// Intake v2 (`{"error": …}`).
pub(crate) const V2: ErrorDialect = ErrorDialect {
    order: &[
        ErrorRule::Timestamp,
        ErrorRule::ExceptionOrLog,
        ErrorRule::Log,
        ErrorRule::Culprit,
        ErrorRule::Id,
        ErrorRule::ReadIds,
        ErrorRule::ParentId,
        ErrorRule::TraceId,
        ErrorRule::TransactionId,
        ErrorRule::Exception,
        ErrorRule::TransactionRef,
        ErrorRule::Context,
    ],
    timestamp: "timestamp",
    culprit: "culprit",
    exception: "exception",
    log: "log",
    id: "id",
    parent_id: "parent_id",
    trace_id: "trace_id",
    transaction_id: "transaction_id",
    transaction: "transaction",
    transaction_ref: TransactionRefKeys {
        order: &[
            TransactionRefRule::Name,
            TransactionRefRule::Type,
            TransactionRefRule::Sampled,
        ],
        name: "name",
        type_: "type",
        sampled: "sampled",
    },
    exc: ExceptionKeys {
        tail: &[
            ExceptionRule::Stacktrace,
            ExceptionRule::Message,
            ExceptionRule::Module,
            ExceptionRule::Type,
            ExceptionRule::Handled,
        ],
        message: "message",
        type_: "type",
        attributes: "attributes",
        code: "code",
        cause: "cause",
        stacktrace: "stacktrace",
        module: "module",
        handled: "handled",
    },
    log_keys: LogKeys {
        level: "level",
        logger_name: "logger_name",
        message: "message",
        param_message: "param_message",
        stacktrace: "stacktrace",
        message_max_len: false,
        default_logger: "",
    },
    frames,
    context,
    transaction_id_needs_ref: false,
    span_id_is_transaction_id: true,
};

/// RUM v3 (`{"e": …}`): the same rules under the short keys.
pub(crate) const V3: ErrorDialect = ErrorDialect {
    order: &[
        ErrorRule::Context,
        ErrorRule::Culprit,
        ErrorRule::ExceptionOrLog,
        ErrorRule::Exception,
        ErrorRule::Id,
        ErrorRule::Log,
        ErrorRule::ReadIds,
        ErrorRule::ParentId,
        ErrorRule::Timestamp,
        ErrorRule::TraceId,
        ErrorRule::TransactionRef,
        ErrorRule::TransactionId,
    ],
    timestamp: "timestamp",
    culprit: "cl",
    exception: "ex",
    log: "log",
    id: "id",
    parent_id: "pid",
    trace_id: "tid",
    transaction_id: "xid",
    transaction: "x",
    transaction_ref: TransactionRefKeys {
        order: &[
            TransactionRefRule::Name,
            TransactionRefRule::Sampled,
            TransactionRefRule::Type,
        ],
        name: "n",
        type_: "t",
        sampled: "sm",
    },
    exc: ExceptionKeys {
        tail: &[
            ExceptionRule::Handled,
            ExceptionRule::Message,
            ExceptionRule::Module,
            ExceptionRule::Stacktrace,
            ExceptionRule::Type,
        ],
        message: "mg",
        type_: "t",
        attributes: "at",
        code: "cd",
        cause: "ca",
        stacktrace: "st",
        module: "mo",
        handled: "hd",
    },
    log_keys: LogKeys {
        level: "lv",
        logger_name: "ln",
        message: "mg",
        param_message: "pmg",
        stacktrace: "st",
        message_max_len: true,
        default_logger: "default",
    },
    frames: rum_frames,
    context: rum_context,
    transaction_id_needs_ref: true,
    span_id_is_transaction_id: false,
};

/// Decodes one exception (and, depth first, its causes) into `out`;
/// `parent` is the index of the exception it was the cause of.
pub(crate) fn exception(
    ctx: &mut Ctx,
    d: &ErrorDialect,
    x: Obj<'_>,
    parent: Option<usize>,
    out: &mut Vec<Exception>,
) -> R<()> {
    let k = &d.exc;
    if get(x, k.message).is_none() && get(x, k.type_).is_none() {
        ctx.fail(|| {
            format!(
                "requires at least one of the fields '{};{}'",
                k.message, k.type_
            )
        });
    }
    let attributes = json_obj(x, k.attributes)?;
    let code = str_or_int(ctx, x, k.code)?.unwrap_or_default();
    let idx = out.len();
    out.push(Exception {
        attributes,
        code,
        parent,
        ..Default::default()
    });
    if let Some(causes) = arr(x, k.cause)? {
        for c in causes {
            if let Some(c) = set_element(ctx, k.cause, c)? {
                ctx.push(k.cause);
                exception(ctx, d, c, Some(idx), out)?;
                ctx.pop();
            }
        }
    }
    let mut e = Exception::default();
    for rule in k.tail {
        match rule {
            ExceptionRule::Stacktrace => e.stacktrace = (d.frames)(ctx, x, k.stacktrace)?,
            ExceptionRule::Message => e.message = string(x, k.message)?,
            ExceptionRule::Module => e.module = str_field(ctx, x, k.module)?,
            ExceptionRule::Type => e.type_ = str_field(ctx, x, k.type_)?,
            ExceptionRule::Handled => e.handled = boolean(x, k.handled)?,
        }
    }
    if let Some(dst) = out.get_mut(idx) {
        dst.stacktrace = e.stacktrace;
        dst.message = e.message;
        dst.module = e.module;
        dst.type_ = e.type_;
        dst.handled = e.handled;
    }
    Ok(())
}

/// The error's `log` object.
pub(crate) fn error_log(ctx: &mut Ctx, d: &ErrorDialect, l: Obj<'_>) -> R<ErrorLog> {
    let k = &d.log_keys;
    let level = str_field(ctx, l, k.level)?;
    let logger_name = str_field(ctx, l, k.logger_name)?;
    let message = opt_str(l, k.message)?;
    if k.message_max_len {
        ctx.max1024(k.message, message);
    }
    ctx.required(k.message, message.is_some());
    let param_message = str_field(ctx, l, k.param_message)?;
    let stacktrace = (d.frames)(ctx, l, k.stacktrace)?;
    Ok(ErrorLog {
        message: message.unwrap_or_default().to_owned(),
        level: if level.is_empty() {
            "error".into()
        } else {
            level
        },
        logger_name: if logger_name.is_empty() {
            k.default_logger.to_owned()
        } else {
            logger_name
        },
        param_message,
        stacktrace,
    })
}

/// `'<a>' required when '<b>' is set` for the first of `whens` that is set.
pub(crate) fn required_when(ctx: &mut Ctx, key: &str, present: bool, whens: [(&str, bool); 2]) {
    if present {
        return;
    }
    if let Some((w, _)) = whens.into_iter().find(|(_, set)| *set) {
        ctx.fail(|| format!("'{key}' required when '{w}' is set"));
    }
}

/// Decodes one error line's root object in dialect `d`.
pub(crate) fn error(ctx: &mut Ctx, d: &ErrorDialect, o: Obj<'_>, meta: &Metadata) -> R<Event> {
    let mut ev = Event::new(meta, Body::Error(Box::default()));
    let mut er = ErrorEvent::default();
    let (mut exc, mut lg) = (None, None);
    let (mut id, mut parent_id, mut trace_id, mut transaction_id) = (None, None, None, None);
    let mut has_ref = false;
    for rule in d.order {
        match rule {
            ErrorRule::Timestamp => {
                if let Some(ts) = timestamp(o, d.timestamp)? {
                    ev.timestamp_ns = ts;
                }
            }
            ErrorRule::Context => er.custom = (d.context)(ctx, o, &mut ev)?.1,
            ErrorRule::Culprit => er.culprit = str_field(ctx, o, d.culprit)?,
            ErrorRule::ExceptionOrLog => {
                exc = set_obj(o, d.exception)?;
                lg = set_obj(o, d.log)?;
                if exc.is_none() && lg.is_none() {
                    ctx.fail(|| {
                        format!(
                            "requires at least one of the fields '{};{}'",
                            d.exception, d.log
                        )
                    });
                }
            }
            ErrorRule::Exception => {
                if let Some(x) = exc {
                    ctx.push(d.exception);
                    exception(ctx, d, x, None, &mut er.exceptions)?;
                    ctx.pop();
                }
            }
            ErrorRule::Log => {
                if let Some(l) = lg {
                    ctx.push(d.log);
                    er.log = Some(error_log(ctx, d, l)?);
                    ctx.pop();
                }
            }
            ErrorRule::Id => {
                id = opt_str(o, d.id)?;
                ctx.max1024(d.id, id);
                ctx.required(d.id, id.is_some());
            }
            ErrorRule::ReadIds => {
                parent_id = opt_str(o, d.parent_id)?;
                trace_id = opt_str(o, d.trace_id)?;
                transaction_id = opt_str(o, d.transaction_id)?;
            }
            ErrorRule::ParentId => {
                ctx.max1024(d.parent_id, parent_id);
                required_when(
                    ctx,
                    d.parent_id,
                    parent_id.is_some(),
                    [
                        (d.transaction_id, transaction_id.is_some()),
                        (d.trace_id, trace_id.is_some()),
                    ],
                );
            }
            ErrorRule::TraceId => {
                ctx.max1024(d.trace_id, trace_id);
                required_when(
                    ctx,
                    d.trace_id,
                    trace_id.is_some(),
                    [
                        (d.transaction_id, transaction_id.is_some()),
                        (d.parent_id, parent_id.is_some()),
                    ],
                );
            }
            ErrorRule::TransactionId => ctx.max1024(d.transaction_id, transaction_id),
            ErrorRule::TransactionRef => {
                if let Some(t) = set_obj(o, d.transaction)? {
                    has_ref = true;
                    let k = &d.transaction_ref;
                    ctx.push(d.transaction);
                    for r in k.order {
                        match r {
                            TransactionRefRule::Name => {
                                er.transaction_name = str_field(ctx, t, k.name)?
                            }
                            TransactionRefRule::Type => {
                                er.transaction_type = str_field(ctx, t, k.type_)?
                            }
                            TransactionRefRule::Sampled => {
                                er.transaction_sampled = boolean(t, k.sampled)?
                            }
                        }
                    }
                    ctx.pop();
                }
            }
        }
    }
    er.id = id.unwrap_or_default().to_owned();
    ev.parent_id = parent_id.unwrap_or_default().to_owned();
    ev.trace_id = trace_id.unwrap_or_default().to_owned();
    if has_ref || !d.transaction_id_needs_ref {
        er.transaction_id = transaction_id.unwrap_or_default().to_owned();
    }
    if d.span_id_is_transaction_id {
        er.span_id = er.transaction_id.clone();
    }
    er.message = match &er.log {
        Some(l) if !l.message.is_empty() => l.message.clone(),
        _ => er
            .exceptions
            .first()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
    };
    er.grouping_key = grouping_key(&er);
    ev.body = Body::Error(Box::new(er));
    Ok(ev)
}
