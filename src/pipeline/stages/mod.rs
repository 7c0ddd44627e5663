//! One file per pipeline stage. Each stage is an
//! [`Actor`](super::supervisor::Actor) run by the supervisor, and its file
//! has a `start(wiring, name, sizing)` function that builds the actor from
//! the shared resources and the next stage's inboxes
//! ([`Wiring`](super::topology::Wiring)) and hands its own inboxes on.
//! [`super::topology::STAGES`] lists the stages in order.

pub mod aggregator;
pub mod decoder;
pub mod indexer;
pub mod rate;
pub mod sourcemap;
pub mod validator;
