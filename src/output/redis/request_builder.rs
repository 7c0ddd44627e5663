//! Turns indexer documents into Redis commands: the key rendered from the
//! `key` format string, the broker message as value. A document whose key
//! cannot be rendered fails on its own and never holds up the batch.

use super::config::{Datatype, RedisSettings};
use crate::output::message::{Document, MessageError};

/// One message waiting to be sent.
pub struct Entry {
    pub key: String,
    pub body: Vec<u8>,
}

pub fn build(doc: &[u8], settings: &RedisSettings, version: &str) -> Result<Entry, MessageError> {
    let d = Document::parse(doc)?;
    let key = settings.key.render(&d, version)?;
    Ok(Entry {
        key,
        body: d.body(version),
    })
}

/// One pipelined round trip for the batch.
pub fn pipeline(entries: &[Entry], datatype: Datatype) -> redis::Pipeline {
    let mut p = redis::pipe();
    for e in entries {
        match datatype {
            Datatype::List => p.cmd("RPUSH").arg(&e.key).arg(&e.body[..]).ignore(),
            Datatype::Channel => p.cmd("PUBLISH").arg(&e.key).arg(&e.body[..]).ignore(),
        };
    }
    p
}
