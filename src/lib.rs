//! apm-rs: an Elastic APM intake server.
//!
//! Request path (docs/architecture.md): [`http`] handlers authenticate ([`auth`])
//! and stream request bodies as batches of raw ndjson lines into the
//! [`pipeline`], whose stages (decoder → allow-list validator → rate shards →
//! sourcemap applier → bulk indexer) are actors joined by bounded channels.
//! The indexer encodes events ([`model`]) into an [`output`]. The memory
//! [`budget`] and the per-IP [`ratelimit`]er are shared by the HTTP layer
//! and the pipeline; [`server`] creates them and wires every part.

pub mod agentcfg;
pub mod aggregation;
pub mod auth;
pub mod budget;
pub mod config;
pub mod es;
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod queue;
pub mod ratelimit;
pub mod server;
pub mod sourcemap;
pub mod telemetry;
pub mod version;
