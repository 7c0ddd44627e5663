//! RUM v3 decoding (documents.md §14). Not implemented yet: every v3 line is
//! rejected with a decode error so the stream goes on.

use super::{Obj, R};
use crate::model::event::Metadata;
use crate::model::{DecodeConfig, Event, LineError, RequestBase};

/// Decodes a v3 metadata root (`{"m": …}`).
pub(crate) fn decode_metadata(_root: &Obj<'_>, _base: &RequestBase, _cfg: &DecodeConfig) -> R<Metadata> {
    Err(LineError::Decode("RUM v3 not supported yet".into()))
}

/// Decodes a v3 `x` (transaction) or `e` (error) line.
pub(crate) fn decode_event(_is_tx: bool, _root: &Obj<'_>, _meta: &Metadata, _cfg: &DecodeConfig, _out: &mut Vec<Event>) -> R<()> {
    Err(LineError::Decode("RUM v3 not supported yet".into()))
}
