//! HTTP concerns: routes, handlers, middleware, error → response mapping.

pub mod client_ip;
pub mod cors;
pub mod tls;
