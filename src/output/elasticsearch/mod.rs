//! Elasticsearch output (placeholder; see issue 3).
use super::{OutputError, OutputFactory};
use crate::config::Config;
use std::sync::Arc;

/// Builds the Elasticsearch output factory from `output.elasticsearch`.
pub fn factory(_cfg: &Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    Err(OutputError::Config(
        "the Elasticsearch output is not implemented yet".into(),
    ))
}
