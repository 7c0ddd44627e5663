//! Protocol-level limits of the HTTP listener and their metrics: open
//! connections (counted per connection, decremented when it closes), the
//! connection watchdog, `apm-server.max_header_size` (→ `431
//! {"error":"request header fields too large"}`), no processing behind a
//! `Connection: close`, and the intake body byte counters.
//!
//! Invariants: the open-connections gauge is raised by the server's
//! `on_connect` hook and lowered by per-connection state dropped with the
//! connection's extensions, so it cannot drift; the header check looks only
//! at the parsed head (actix-http itself refuses heads over 128 KiB or 96
//! headers with a bodiless 431 before any of this runs).
//!
//! Watchdog: actix-http bounds the first request's head
//! (`client_request_timeout`) and idle keep-alive, but a kept-alive
//! connection trickling the next head a byte at a time stays open forever.
//! Every connection therefore gets a timer: when no request has been in
//! progress for `idle_timeout + read_timeout`, its socket is shut down
//! (through a duplicate of the socket's descriptor, owned by the connection
//! state and dropped with it, so it can never touch another connection).
//!
//! The same watchdog applies `apm-server.write_timeout`: actix-http has no
//! write deadline, so a client that stops reading while answers pile up
//! (pipelined requests, large answers) would hold its connection and the
//! server's buffered answers until the idle rule fired. When the socket's
//! send queue has held unsent bytes for `write_timeout` without emptying,
//! the connection is shut down. An answer that fits in the kernel's buffers
//! is written at once, as with Go's write deadline.

use super::response;
use super::AppState;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;
use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge, Registry};
use std::any::Any;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Answer to a request head larger than `apm-server.max_header_size`.
pub const HEADER_TOO_LARGE: &str = "request header fields too large";
/// actix-http refuses longer heads itself (bodiless 431).
pub const ACTIX_HEAD_LIMIT: usize = 128 << 10;
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
}

/// The listener's `on_connect` hook: metrics and the watchdog.
#[derive(Clone)]
pub struct ConnHooks {
    pub metrics: HttpMetrics,
    /// No request in progress for this long closes the connection.
    pub idle_limit: Duration,
    /// Unsent answer bytes waiting this long close the connection
    /// (`apm-server.write_timeout`; `None` when it is 0).
    pub write_limit: Option<Duration>,
}

impl ConnHooks {
    /// For `HttpServer::on_connect`: counts the connection until its
    /// extensions are dropped and starts its watchdog.
    pub fn on_connect(&self, io: &dyn Any, ext: &mut Extensions) {
        self.metrics.open_connections.inc();
        let shared = Arc::new(ConnShared {
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            socket: socket_of(io),
        });
        if shared.socket.is_some() {
            watchdog(Arc::downgrade(&shared), self.idle_limit, self.write_limit);
        }
        ext.insert(ConnState {
            open: self.metrics.open_connections.clone(),
            shared,
        });
    }
}

/// A duplicate of the connection's TCP socket (plain or under TLS).
fn socket_of(io: &dyn Any) -> Option<std::net::TcpStream> {
    use actix_web::rt::net::TcpStream;
    let tcp: &TcpStream = if let Some(t) = io.downcast_ref::<TcpStream>() {
        t
    } else {
        io.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()?
            .get_ref()
            .0
    };
    tcp.as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from)
}

/// Shuts the connection down once it has had no request in progress for
/// `idle`, or once answers have waited unsent for `write`; ends with the
/// connection. With a write limit it looks at the send queue a few times per
/// limit, so a stall is seen between `write` and `1.25 × write` after it began.
fn watchdog(conn: Weak<ConnShared>, idle: Duration, write: Option<Duration>) {
    actix_web::rt::spawn(async move {
        let tick = write.map(|w| (w / 4).clamp(MIN_WRITE_TICK, idle.max(MIN_WRITE_TICK)));
        let mut unsent_since: Option<Instant> = None;
        let mut wake = Instant::now() + tick.unwrap_or(idle);
        loop {
            tokio::time::sleep_until(wake).await;
            let Some(c) = conn.upgrade() else { return };
            let Some(socket) = &c.socket else { return };
            let now = Instant::now();
            if let Some(limit) = write {
                if unsent_bytes(socket) > 0 {
                    let since = *unsent_since.get_or_insert(now);
                    if now >= since + limit {
                        tracing::debug!(
                            "closing a connection whose answers went unread for write_timeout"
                        );
                        let _ = socket.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                } else {
                    unsent_since = None;
                }
            }
            let idle_due = if c.in_flight.load(Ordering::Relaxed) > 0 {
                now + idle
            } else {
                *c.last.lock() + idle
            };
            if idle_due <= now {
                let _ = socket.shutdown(std::net::Shutdown::Both);
                return;
            }
            wake = tick.map_or(idle_due, |t| idle_due.min(now + t));
        }
    });
}

/// The watchdog's shortest look interval when a write limit is set.
const MIN_WRITE_TICK: Duration = Duration::from_millis(100);

/// Bytes written to the socket that the peer has not yet taken (Linux
/// `TIOCOUTQ`: unsent plus unacknowledged); 0 if the kernel cannot say.
fn unsent_bytes(socket: &std::net::TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ stores one `c_int` through the pointer, which points
    // to a live local; the descriptor is open for as long as `socket` lives.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r == 0 {
        usize::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Per-connection state; lowers the open-connections gauge when the
/// connection ends.
struct ConnState {
    open: IntGauge,
    shared: Arc<ConnShared>,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        self.open.dec();
    }
}

struct ConnShared {
    /// A response on this connection said `Connection: close`.
    closing: AtomicBool,
    /// Requests being handled.
    in_flight: AtomicUsize,
    /// When the last request started or ended.
    last: Mutex<Instant>,
    socket: Option<std::net::TcpStream>,
}

/// Marks a request in progress on its connection until dropped.
struct InFlight(Arc<ConnShared>);

impl InFlight {
    fn new(c: &Arc<ConnShared>) -> Self {
        c.in_flight.fetch_add(1, Ordering::Relaxed);
        *c.last.lock() = Instant::now();
        InFlight(Arc::clone(c))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Size of the request head as received: request line and header lines,
/// each with its CRLF, plus the final CRLF.
pub fn head_size(req: &ServiceRequest) -> usize {
    // origin-form (`/path?q`) without allocating; absolute-form as written
    let uri = req.uri();
    let target = match (uri.authority(), uri.path_and_query()) {
        (None, Some(p)) => p.as_str().len(),
        _ => uri.to_string().len(),
    };
    let line = req.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
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
    let conn = req.conn_data::<ConnState>().map(|c| Arc::clone(&c.shared));
    let _in_flight = conn.as_ref().map(InFlight::new);
    if conn
        .as_ref()
        .is_some_and(|c| c.closing.load(Ordering::Relaxed))
    {
        return Ok(refuse(
            req,
            StatusCode::SERVICE_UNAVAILABLE,
            CONNECTION_CLOSING,
        ));
    }
    let too_large = req.app_data::<web::Data<AppState>>().is_some_and(|s| {
        let max = s.cfg.apm_server.max_header_size;
        let over = max > 0 && max < ACTIX_HEAD_LIMIT && head_size(&req) > max;
        if over {
            s.http_metrics.header_too_large.inc();
        }
        over
    });
    if too_large {
        mark_closing(conn.as_deref());
        return Ok(refuse(
            req,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HEADER_TOO_LARGE,
        ));
    }
    let res = next.call(req).await?;
    if res.response().head().connection_type() == ConnectionType::Close {
        mark_closing(conn.as_deref());
    }
    Ok(res.map_into_left_body())
}

fn mark_closing(conn: Option<&ConnShared>) {
    if let Some(c) = conn {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchdog_reaches_the_socket_and_shuts_it_down() {
        use tokio::io::AsyncReadExt;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        // something else is not a socket
        assert!(socket_of(&5u8).is_none());
        let dup = socket_of(&server).expect("a plain TCP stream's socket");
        dup.shutdown(std::net::Shutdown::Both).unwrap();
        // the client sees the connection end
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        drop(server);
    }
}
