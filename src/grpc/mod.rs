//! OTLP over gRPC: `opentelemetry.proto.collector.{trace,metrics,logs}.v1.*Service/Export`
//! on a listener of its own (`apm-server.otlp.grpc.host`, see docs/otlp.md).
//!
//! apm-server serves gRPC on its intake port. apm-rs's HTTP server (actix-web)
//! cannot send HTTP/2 trailers, and over TLS browsers and gRPC clients both
//! negotiate `h2`, so one port cannot be split cleanly; gRPC therefore runs
//! in tonic on a dedicated thread with its own small tokio runtime, with the
//! intake listener's TLS settings.
//!
//! Invariants: authentication, the anonymous per-IP limit and the client IP
//! follow the same rules as the HTTP backend routes (same authenticator,
//! limiter and trusted proxies); the message bytes are not decoded here but
//! enter the same bounded pipeline as one batch through
//! [`crate::http::otlp_export`], so back-pressure, the memory budget and the
//! accounting hold unchanged; a message is at most
//! [`MAX_MESSAGE_BYTES`](crate::http::otlp_export::MAX_MESSAGE_BYTES) on the
//! wire and decompressed; every failure is a gRPC status (see [`status`]).
//!
//! Files: [`listener`] (socket, TLS, runtime, shutdown), [`auth`]
//! (credentials and rate limit from metadata), [`service`] (routing and the
//! Export calls), [`status`] (errors → gRPC status codes).

pub mod auth;
pub mod listener;
pub mod service;
pub mod status;

pub use listener::{GrpcServer, GrpcStartError};
