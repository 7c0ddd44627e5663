//! Protocol-level limits of the HTTP listener and their metrics: open
//! connections (counted per connection, decremented when it closes),
//! `apm-server.max_header_size` (→ `431 {"error":"request header fields too
//! large"}`), and the intake body byte counters.
//!
//! Invariants: the open-connections gauge is raised by the server's
//! `on_connect` hook and lowered by a guard dropped with the connection's
//! extensions, so it cannot drift; the header check looks only at the parsed
//! head (actix-http itself refuses heads over 128 KiB or 96 headers with a
//! bodiless 431 before any of this runs).

use super::response;
use super::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{IntCounter, IntGauge, Registry};
use std::sync::atomic::{AtomicBool, Ordering};

/// Answer to a request head larger than `apm-server.max_header_size`.
pub const HEADER_TOO_LARGE: &str = "request header fields too large";
/// Answer to a pipelined request behind a response that closed the connection.
pub const CONNECTION_CLOSING: &str = "connection closing: request not processed";

/// Metrics of the listener, registered on the server's registry.
#[derive(Clone)]
pub struct HttpMetrics {
    pub open_connections: IntGauge,
    pub header_too_large: IntCounter,
    /// Intake body bytes as sent (compressed when compressed).
    pub body_bytes: IntCounter,
    /// Intake body bytes after decompression.
    pub decoded_bytes: IntCounter,
}

impl HttpMetrics {
    /// Registers the metrics on `reg` (names get the registry's `apm_rs_` prefix).
    pub fn new(reg: &Registry) -> Result<Self, prometheus::Error> {
        let open_connections = IntGauge::new(
            "http_open_connections",
            "Open client connections on the intake listener.",
        )?;
        let header_too_large = IntCounter::new(
            "http_header_too_large_total",
            "Requests refused with 431 because their head exceeded apm-server.max_header_size.",
        )?;
        let body_bytes = IntCounter::new(
            "intake_body_bytes_total",
            "Intake request body bytes read, as sent (compressed).",
        )?;
        let decoded_bytes = IntCounter::new(
            "intake_decoded_bytes_total",
            "Intake request body bytes after decompression.",
        )?;
        reg.register(Box::new(open_connections.clone()))?;
        reg.register(Box::new(header_too_large.clone()))?;
        reg.register(Box::new(body_bytes.clone()))?;
        reg.register(Box::new(decoded_bytes.clone()))?;
        Ok(HttpMetrics {
            open_connections,
            header_too_large,
            body_bytes,
            decoded_bytes,
        })
    }

    /// For the server's `on_connect` hook: counts the connection until its
    /// extensions (and so the guard) are dropped.
    pub fn on_connect(&self, ext: &mut Extensions) {
        self.open_connections.inc();
        ext.insert(ConnState {
            open: self.open_connections.clone(),
            closing: AtomicBool::new(false),
        });
    }
}

/// Per-connection state; lowers the open-connections gauge when the
/// connection ends.
struct ConnState {
    open: IntGauge,
    /// A response on this connection said `Connection: close`.
    closing: AtomicBool,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Size of the request head as received: request line and header lines,
/// each with its CRLF, plus the final CRLF.
pub fn head_size(req: &ServiceRequest) -> usize {
    let line =
        req.method().as_str().len() + 1 + req.uri().to_string().len() + " HTTP/1.1\r\n".len();
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    line + headers + 2
}

/// Middleware at the edge of every route:
/// * a request pipelined behind a response that said `Connection: close`
///   is not processed (RFC 9112 §9.6; actix-http would dispatch it):
///   `503 {"error":"connection closing: request not processed"}`;
/// * a head larger than `apm-server.max_header_size` is refused with
///   `431 {"error":"request header fields too large"}` and `Connection: close`.
pub async fn connection_limits<B>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error>
where
    B: MessageBody + 'static,
{
    let closing = req
        .conn_data::<ConnState>()
        .is_some_and(|c| c.closing.load(Ordering::Relaxed));
    if closing {
        return Ok(refuse(
            req,
            StatusCode::SERVICE_UNAVAILABLE,
            CONNECTION_CLOSING,
        ));
    }
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| (s.cfg.apm_server.max_header_size, s.http_metrics.clone()));
    if let Some((max, metrics)) = limit {
        if max > 0 && head_size(&req) > max {
            metrics.header_too_large.inc();
            mark_closing(&req);
            return Ok(refuse(
                req,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                HEADER_TOO_LARGE,
            ));
        }
    }
    let res = next.call(req).await?;
    if res.response().head().connection_type() == ConnectionType::Close {
        if let Some(c) = res.request().conn_data::<ConnState>() {
            c.closing.store(true, Ordering::Relaxed);
        }
    }
    Ok(res.map_into_left_body())
}

fn mark_closing(req: &ServiceRequest) {
    if let Some(c) = req.conn_data::<ConnState>() {
        c.closing.store(true, Ordering::Relaxed);
    }
}

/// An `{"error": text}` answer that closes the connection.
fn refuse<B>(
    req: ServiceRequest,
    status: StatusCode,
    text: &str,
) -> ServiceResponse<EitherBody<B>> {
    let (hreq, _) = req.into_parts();
    let mut resp = response::error(&hreq, status, text);
    resp.head_mut().set_connection_type(ConnectionType::Close);
    ServiceResponse::new(hreq, resp).map_into_right_body()
}
