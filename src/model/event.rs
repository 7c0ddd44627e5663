//! Decoded events. PLACEHOLDER: replaced by the full model (documents.md §5–§12).

use super::RequestBase;
use std::sync::Arc;

/// A decoded metadata line plus its request base; shared by all events of a request.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub(crate) base: RequestBase,
    pub(crate) service_name: Arc<str>,
    pub(crate) agent_name: Arc<str>,
}

/// One decoded event.
#[derive(Clone, Debug)]
pub struct Event {
    pub(crate) kind: &'static str,
    pub(crate) timestamp_ns: i64,
    pub(crate) service_name: Arc<str>,
    pub(crate) agent_name: Arc<str>,
}

impl Event {
    /// Final `agent.name` (after event-level overrides).
    pub fn agent_name(&self) -> &str {
        &self.agent_name
    }
    /// Final `service.name` (after event-level overrides).
    pub fn service_name(&self) -> &str {
        &self.service_name
    }
}

impl Metadata {
    pub fn base(&self) -> &RequestBase {
        &self.base
    }
}
