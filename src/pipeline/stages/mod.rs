//! One file per pipeline stage. Each stage is an [`Actor`](super::supervisor::Actor)
//! run by the supervisor; [`super::topology`] lists them in one table and
//! wires their inboxes.

pub mod decoder;
pub mod indexer;
pub mod rate;
pub mod sourcemap;
pub mod validator;
