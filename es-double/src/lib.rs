//! An Elasticsearch test double for apm-rs: the subset of Elasticsearch's
//! HTTP API that apm-rs uses, with faults on demand.
//!
//! Routes (Elasticsearch shapes): `GET /` cluster info; `POST /_bulk` (gzip
//! bodies, per-item results, `filter_path` honoured roughly, documents kept
//! per index); `GET|POST /_security/user/_has_privileges` (answers per API
//! key); `POST /{index}/_search` with `scroll`, `POST /_search/scroll`,
//! `DELETE /_search/scroll[/{id}]`; `PUT|POST /{index}/_doc[/{id}]`,
//! `PUT /{index}/_create/{id}`, `GET /{index}/_doc/{id}`.
//! Control routes: `POST /_double/faults` (JSON [`Faults`]),
//! `POST /_double/down?ms=N` (or `seconds=N`), `POST /_double/reset`,
//! `GET /_double/stats`.
//!
//! ```no_run
//! let es = es_double::EsDouble::start();
//! println!("{}", es.url());
//! es.set_faults(es_double::Faults { item_429_fraction: 0.5, ..Default::default() });
//! ```
//!
//! Invariants: the server runs on its own thread with its own actix system,
//! so it works from plain `#[test]`s and from async tests alike; "down" really
//! closes the listening socket (connections are refused) and reopens it on the
//! same address; dropping the handle stops the server.

mod handlers;
pub mod query;
mod state;

pub use state::{ApiKeyAnswer, BulkRecord, Faults};

use actix_web::{middleware::DefaultHeaders, web, App, HttpServer};
use serde_json::Value;
use state::State;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// Commands to the server thread.
#[derive(Debug)]
pub(crate) enum Ctl {
    Down(Duration),
    Stop,
}

/// How to start a double.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on; `127.0.0.1:0` (a free port) by default.
    pub listen: SocketAddr,
    /// Only count bulk documents (no parsing, no storage): a fast stub for load tests.
    pub fast: bool,
    /// HTTP worker threads.
    pub workers: usize,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
}

/// PEM files of the double's server certificate (chain) and private key.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// When set, clients must present a certificate signed by one of these
    /// CAs (PEM), or the handshake fails.
    pub client_ca: Option<std::path::PathBuf>,
}

fn tls_config(t: &TlsFiles) -> std::io::Result<rustls::ServerConfig> {
    let bad = |what: &str| std::io::Error::other(format!("es-double tls: {what}"));
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(
        &t.certificate,
    )?))
    .collect::<Result<Vec<_>, _>>()?;
    let key =
        rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(&t.key)?))?
            .ok_or_else(|| bad("no private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e.to_string()))?;
    let builder = match &t.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(path)?))
            {
                roots.add(c?).map_err(|e| bad(&e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad(&e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e.to_string()))
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fast: false,
            workers: 2,
            tls: None,
        }
    }
}

/// A running double; stops when dropped.
pub struct EsDouble {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    ctl: UnboundedSender<Ctl>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EsDouble {
    /// Starts a double on a free local port. Panics if it cannot bind (tests only).
    pub fn start() -> EsDouble {
        Self::start_with(Options::default()).expect("es-double: cannot start")
    }

    /// Starts a fast-mode double (counts bulk documents only) on a free local port.
    pub fn start_fast() -> EsDouble {
        Self::start_with(Options {
            fast: true,
            ..Default::default()
        })
        .expect("es-double: cannot start")
    }

    /// Starts a double with `opts`.
    pub fn start_with(opts: Options) -> std::io::Result<EsDouble> {
        let listener = TcpListener::bind(opts.listen)?;
        let addr = listener.local_addr()?;
        let tls = opts.tls.as_ref().map(tls_config).transpose()?;
        let state = Arc::new(State::new(opts.fast));
        let (tx, rx) = unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let st = Arc::clone(&state);
        let ctl = tx.clone();
        let workers = opts.workers.max(1);
        let thread = std::thread::Builder::new()
            .name("es-double".into())
            .spawn(move || {
                let sys = actix_rt::System::new();
                sys.block_on(serve(Serve {
                    listener,
                    addr,
                    state: st,
                    ctl,
                    rx,
                    workers,
                    tls,
                    ready: ready_tx,
                }));
            })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("es-double did not start")),
        }
        Ok(EsDouble {
            addr,
            tls: opts.tls.is_some(),
            state,
            ctl: tx,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `127.0.0.1:<port>` (for `output.elasticsearch.hosts`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sources of the documents of `index`, in insertion order.
    pub fn docs(&self, index: &str) -> Vec<Value> {
        self.state
            .inner
            .lock()
            .indices
            .get(index)
            .map(|i| i.docs.iter().map(|(_, d)| d.clone()).collect())
            .unwrap_or_default()
    }

    /// `(id, source)` of the documents of `index`.
    pub fn docs_with_ids(&self, index: &str) -> Vec<(String, Value)> {
        self.state
            .inner
            .lock()
            .indices
            .get(index)
            .map(|i| i.docs.clone())
            .unwrap_or_default()
    }

    /// Names of the indices holding documents.
    pub fn indices(&self) -> Vec<String> {
        self.state.inner.lock().indices.keys().cloned().collect()
    }

    /// Documents stored over all indices (plus those counted in fast mode).
    pub fn doc_count(&self) -> u64 {
        let stored: usize = self
            .state
            .inner
            .lock()
            .indices
            .values()
            .map(|i| i.docs.len())
            .sum();
        stored as u64 + self.state.fast_docs.load(Ordering::Relaxed)
    }

    /// Bulk requests received (including those answered with an injected fault).
    pub fn bulk_requests(&self) -> u64 {
        self.state.bulk_requests.load(Ordering::Relaxed)
    }

    /// The last (up to 1000) bulk requests: query string, headers, item count, status.
    pub fn bulk_log(&self) -> Vec<BulkRecord> {
        self.state.inner.lock().bulk_log.clone()
    }

    /// Replaces the fault settings (and restarts their limits).
    pub fn set_faults(&self, f: Faults) {
        let mut g = self.state.inner.lock();
        g.faults = f;
        g.item_faults_used = 0;
        g.request_faults_used = 0;
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Closes the listening socket (connections refused, open ones dropped)
    /// for `d`, then listens again on the same address. Returns at once.
    pub fn down_for(&self, d: Duration) {
        let _ = self.ctl.send(Ctl::Down(d));
    }

    /// Stores a document (as `PUT /{index}/_doc/{id}` would).
    pub fn put_doc(&self, index: &str, id: &str, doc: Value) {
        let mut g = self.state.inner.lock();
        let _ = State::store(&mut g, index, Some(id), doc, false);
    }

    /// Configures how `_has_privileges` answers for API key `id:key`.
    pub fn set_api_key(&self, id: &str, key: &str, answer: ApiKeyAnswer) {
        self.state
            .inner
            .lock()
            .api_keys
            .insert(id.to_string(), (key.to_string(), answer));
    }

    /// `_has_privileges` calls received.
    pub fn has_privileges_calls(&self) -> u64 {
        self.state.has_privileges_calls.load(Ordering::Relaxed)
    }

    /// The body of the last `_has_privileges` call.
    pub fn last_has_privileges_body(&self) -> Option<String> {
        self.state.inner.lock().last_has_privileges_body.clone()
    }

    /// `_search` and scroll calls received.
    pub fn search_calls(&self) -> u64 {
        self.state.search_calls.load(Ordering::Relaxed)
    }

    /// Scroll contexts still open (a client that clears its scrolls leaves 0).
    pub fn open_scrolls(&self) -> usize {
        self.state.inner.lock().scrolls.len()
    }

    /// Forgets every document, key, scroll, fault and counter.
    pub fn reset(&self) {
        self.state.reset();
    }
}

impl Drop for EsDouble {
    fn drop(&mut self) {
        let _ = self.ctl.send(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_again(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("bind failed")))
}

/// Everything the server thread needs.
struct Serve {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<State>,
    ctl: UnboundedSender<Ctl>,
    rx: UnboundedReceiver<Ctl>,
    workers: usize,
    tls: Option<rustls::ServerConfig>,
    ready: std::sync::mpsc::Sender<std::io::Result<()>>,
}

async fn serve(s: Serve) {
    let Serve {
        listener,
        addr,
        state,
        ctl,
        mut rx,
        workers,
        tls,
        ready,
    } = s;
    let mut listener = Some(listener);
    let mut ready = Some(ready);
    loop {
        let l = match listener.take() {
            Some(l) => l,
            None => match bind_again(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("es-double: cannot listen again on {addr}: {e}");
                    return;
                }
            },
        };
        let data = web::Data::new(handlers::Ctx {
            state: Arc::clone(&state),
            ctl: ctl.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 30))
                .app_data(web::JsonConfig::default().limit(1 << 26))
                .wrap(DefaultHeaders::new().add(("X-Elastic-Product", "Elasticsearch")))
                .configure(handlers::routes)
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(0);
        let server = match &tls {
            Some(cfg) => server.listen_rustls_0_23(l, cfg.clone()),
            None => server.listen(l),
        }
        .map(|s| s.run());
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                }
                return;
            }
        };
        let handle = server.handle();
        let join = actix_rt::spawn(server);
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        match rx.recv().await {
            Some(Ctl::Down(d)) => {
                handle.stop(false).await;
                let _ = join.await;
                // stay down for `d`, unless told to stop meanwhile
                let until = tokio::time::Instant::now() + d;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => break,
                        m = rx.recv() => match m {
                            Some(Ctl::Down(_)) => continue,
                            Some(Ctl::Stop) | None => return,
                        },
                    }
                }
            }
            Some(Ctl::Stop) | None => {
                handle.stop(false).await;
                let _ = join.await;
                return;
            }
        }
    }
}
