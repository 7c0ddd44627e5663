//! The OTLP/gRPC listener: a TCP socket (TLS when `apm-server.ssl.*` is on,
//! with the intake listener's rustls configuration and ALPN `h2`), served
//! by tonic on a dedicated thread with its own tokio runtime.
//!
//! Invariants: the socket is bound before [`start`] returns (a bind error
//! is a start error); TLS handshakes run concurrently and each must finish
//! within `apm-server.read_timeout`; with `apm-server.max_connections` set,
//! at most that many gRPC connections are open (further clients wait in
//! the kernel's backlog); HTTP/2 flow-control windows are
//! `apm-server.http2.*`, headers at most `apm-server.max_header_size`;
//! [`GrpcServer::stop`] lets in-flight calls finish (GOAWAY) for up to
//! `apm-server.shutdown_timeout`, then drops what is left.

use super::service::{OtlpService, Peer};
use crate::http::AppState;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

/// Why the gRPC listener did not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcStartError {
    #[error("cannot listen on {addr} (apm-server.otlp.grpc.host): {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot start the gRPC runtime: {0}")]
    Runtime(io::Error),
}

/// A running gRPC listener.
pub struct GrpcServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Binds `addr` and serves the OTLP services on their own thread.
pub fn start(
    state: Arc<AppState>,
    addr: &str,
    tls: Option<rustls::ServerConfig>,
) -> Result<GrpcServer, GrpcStartError> {
    let bind_err = |source| GrpcStartError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("grpc-worker")
        .enable_all()
        .build()
        .map_err(GrpcStartError::Runtime)?;
    let tls = tls.map(|mut t| {
        t.alpn_protocols = vec![b"h2".to_vec()];
        TlsAcceptor::from(Arc::new(t))
    });
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("grpc".into())
        .spawn(move || {
            rt.block_on(serve(state, listener, tls, stopped));
            rt.shutdown_background();
        })
        .map_err(GrpcStartError::Runtime)?;
    Ok(GrpcServer {
        addr: local,
        stop,
        thread: Some(thread),
    })
}

impl GrpcServer {
    /// Stops accepting and tells clients to go away; in-flight calls finish.
    pub fn begin_stop(&self) {
        let _ = self.stop.send(true);
    }

    /// [`Self::begin_stop`], then waits for the listener's thread (bounded
    /// by `apm-server.shutdown_timeout`).
    pub fn stop(mut self) {
        self.begin_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    state: Arc<AppState>,
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "OTLP/gRPC listener failed");
            return;
        }
    };
    let a = &state.cfg.apm_server;
    let handshake = a.read_timeout.get();
    let grace = a.shutdown_timeout.get();
    let slots = (a.max_connections > 0).then(|| Arc::new(Semaphore::new(a.max_connections)));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(a.http2.initial_window_size)
        .initial_connection_window_size(a.http2.initial_connection_window_size)
        .http2_max_header_list_size(u32::try_from(a.max_header_size).unwrap_or(u32::MAX))
        .http2_keepalive_interval(Some(a.idle_timeout.get()))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    let (conns, incoming) = mpsc::channel::<Conn>(64);
    let acceptor = tokio::spawn(accept(listener, tls, slots, handshake, conns));
    let incoming = futures_util::stream::unfold(incoming, |mut rx| async move {
        rx.recv().await.map(|c| (Ok::<_, io::Error>(c), rx))
    });
    let svc = OtlpService {
        state: Arc::clone(&state),
    };
    let mut on_stop = stopped.clone();
    let shutdown = async move {
        let _ = on_stop.wait_for(|s| *s).await;
    };
    let mut on_deadline = stopped;
    let deadline = async move {
        let _ = on_deadline.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        r = server.serve_with_incoming_shutdown(svc, incoming, shutdown) => {
            if let Err(e) = r {
                tracing::error!(error = %e, "OTLP/gRPC server stopped with an error");
            }
        }
        _ = deadline => tracing::warn!("OTLP/gRPC calls still running at the shutdown deadline were dropped"),
    }
    acceptor.abort();
}

/// Accepts connections (TLS handshakes on their own tasks) and hands them to tonic.
async fn accept(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    slots: Option<Arc<Semaphore>>,
    handshake: Duration,
    conns: mpsc::Sender<Conn>,
) {
    loop {
        let slot = match &slots {
            Some(s) => match Arc::clone(s).acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => return,
            },
            None => None,
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // out of file descriptors and the like: wait, do not spin
                tracing::warn!(error = %e, "OTLP/gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match &tls {
            None => {
                let conn = Conn {
                    io: Io::Plain(tcp),
                    peer,
                    _slot: slot,
                };
                if conns.send(conn).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let (acceptor, conns) = (acceptor.clone(), conns.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let conn = Conn {
                                io: Io::Tls(Box::new(s)),
                                peer,
                                _slot: slot,
                            };
                            let _ = conns.send(conn).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "OTLP/gRPC TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "OTLP/gRPC TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection; its slot of `max_connections` is freed on drop.
struct Conn {
    io: Io,
    peer: SocketAddr,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        Peer(self.peer)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
