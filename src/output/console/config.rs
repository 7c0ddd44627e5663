//! Resolved console settings (`output.console.*`).

use crate::config::ConsoleOutput;

/// Documents written per flush when `bulk_max_size` is not set.
pub const DEFAULT_BULK_MAX_SIZE: usize = 2048;

#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// `codec.json.pretty`: indented, multi-line documents.
    pub pretty: bool,
    /// Documents buffered before a write to standard output.
    pub bulk_max_size: usize,
}

impl ConsoleSettings {
    pub fn from_config(c: &ConsoleOutput) -> Self {
        ConsoleSettings {
            pretty: c.codec.json.pretty,
            bulk_max_size: c.bulk_max_size.unwrap_or(DEFAULT_BULK_MAX_SIZE).max(1),
        }
    }
}
