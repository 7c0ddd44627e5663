//! Kafka output (`output.kafka`).
use super::{OutputError, OutputFactory};
use std::sync::Arc;
pub fn factory(_cfg: &crate::config::Config) -> Result<Arc<dyn OutputFactory>, OutputError> {
    Err(OutputError::Config("output.kafka: not built yet".into()))
}
