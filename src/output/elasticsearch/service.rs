//! The HTTP side of the output: the host pool (round-robin, a failing host
//! skipped for a while), the request slots that bound bulks in flight over
//! all indexer instances, the bulk call itself and the reachability check.
//!
//! Invariants: at most `max_requests` [`SlotGuard`]s exist at once (a slot is
//! held from flush until every document of the bulk is resolved, retries
//! included); `HostPool::pick` always returns a host (when every host is
//! marked down, the one that comes back first); a host is marked down only on
//! connection errors, timeouts and 5xx answers.

use super::config::{EsSettings, BULK_QUERY};
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// Why a bulk request failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("request to {host} failed: {reason}")]
    Transport { host: String, reason: String },
    #[error("{host} answered {status}: {excerpt}")]
    Status {
        host: String,
        status: u16,
        excerpt: String,
    },
}

impl SendError {
    /// Whether resending the same bulk may succeed: connection errors,
    /// timeouts, 429, 5xx, and 401/403/408 (credentials or privileges may be
    /// fixed while we wait; the retry budget bounds it anyway).
    pub fn retryable(&self) -> bool {
        match self {
            SendError::Transport { .. } => true,
            SendError::Status { status, .. } => {
                matches!(status, 401 | 403 | 408 | 429) || *status >= 500
            }
        }
    }
}

// ---------------------------------------------------------------- slots

/// Counting semaphore usable from plain threads (blocking) and released from async tasks.
pub struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
    /// Set by [`Slots::set_shutdown`]: no waiting past this instant.
    shutdown_at: Mutex<Option<Instant>>,
}

/// One bulk request slot; released on drop.
pub struct SlotGuard(Arc<Slots>);

impl Slots {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(Slots {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
            shutdown_at: Mutex::new(None),
        })
    }

    /// Blocks until a slot is free, or until `deadline` or the shutdown
    /// deadline, whichever comes first (then `None`). Once the shutdown
    /// deadline has passed, only an immediately free slot is taken.
    pub fn acquire(self: &Arc<Self>, deadline: Option<Instant>) -> Option<SlotGuard> {
        let mut free = self.free.lock();
        while *free == 0 {
            let shutdown = *self.shutdown_at.lock();
            let limit = match (deadline, shutdown) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match limit {
                Some(d) => {
                    if Instant::now() >= d {
                        return None;
                    }
                    let _ = self.cv.wait_until(&mut free, d);
                }
                None => self.cv.wait(&mut free),
            }
        }
        *free -= 1;
        Some(SlotGuard(Arc::clone(self)))
    }

    /// From now on nobody waits for a slot past `deadline`; wakes every waiter.
    pub fn set_shutdown(&self, deadline: Instant) {
        {
            let mut s = self.shutdown_at.lock();
            *s = Some(s.map_or(deadline, |d| d.min(deadline)));
        }
        let _free = self.free.lock();
        self.cv.notify_all();
    }

    pub fn free(&self) -> usize {
        *self.free.lock()
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.cv.notify_one();
    }
}

// ---------------------------------------------------------------- hosts

#[derive(Default)]
struct HostState {
    dead_until: Option<Instant>,
    fails: u32,
}

struct Host {
    base: Url,
    bulk: Url,
    state: Mutex<HostState>,
}

/// Hosts used round-robin; a failed host is skipped for a while.
pub struct HostPool {
    hosts: Vec<Host>,
    next: AtomicUsize,
    init: Duration,
    max: Duration,
}

impl HostPool {
    pub fn new(urls: &[Url], init: Duration, max: Duration) -> Self {
        let hosts = urls
            .iter()
            .map(|u| {
                let mut bulk = u.clone();
                let p = format!("{}/_bulk", u.path().trim_end_matches('/'));
                bulk.set_path(&p);
                bulk.set_query(Some(BULK_QUERY));
                Host {
                    base: u.clone(),
                    bulk,
                    state: Mutex::new(HostState::default()),
                }
            })
            .collect();
        HostPool {
            hosts,
            next: AtomicUsize::new(0),
            init,
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The next live host in round-robin order, else the one back first.
    pub fn pick(&self) -> usize {
        let n = self.hosts.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut soonest = (start, None::<Instant>);
        for k in 0..n {
            let i = (start + k) % n;
            let Some(h) = self.hosts.get(i) else { break };
            match h.state.lock().dead_until {
                None => return i,
                Some(t) if t <= now => return i,
                Some(t) => {
                    if soonest.1.is_none_or(|s| t < s) {
                        soonest = (i, Some(t));
                    }
                }
            }
        }
        soonest.0
    }

    /// Skips host `i` for `init · 2^(consecutive failures − 1)`, at most `max`.
    /// Returns for how long.
    pub fn mark_failed(&self, i: usize) -> Duration {
        let Some(h) = self.hosts.get(i) else {
            return Duration::ZERO;
        };
        let mut s = h.state.lock();
        s.fails = s.fails.saturating_add(1);
        let d = self
            .init
            .saturating_mul(1u32 << (s.fails - 1).min(30))
            .min(self.max);
        s.dead_until = Some(Instant::now() + d);
        d
    }

    pub fn mark_ok(&self, i: usize) {
        if let Some(h) = self.hosts.get(i) {
            let mut s = h.state.lock();
            s.fails = 0;
            s.dead_until = None;
        }
    }

    pub fn bulk_url(&self, i: usize) -> Option<&Url> {
        self.hosts.get(i).map(|h| &h.bulk)
    }

    pub fn base_url(&self, i: usize) -> Option<&Url> {
        self.hosts.get(i).map(|h| &h.base)
    }
}

// ---------------------------------------------------------------- client

/// HTTP client, hosts and settings shared by every indexer instance.
pub struct Service {
    pub settings: EsSettings,
    pub client: reqwest::Client,
    pub hosts: HostPool,
}

fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]);
    s.replace('\n', " ")
}

impl Service {
    /// POSTs one bulk body to the next host; `Ok` carries the 2xx response body.
    pub async fn send_bulk(
        &self,
        body: Bytes,
        gzip: bool,
        host_down: &prometheus::IntCounter,
    ) -> Result<Bytes, SendError> {
        let i = self.hosts.pick();
        let Some(url) = self.hosts.bulk_url(i) else {
            return Err(SendError::Transport {
                host: String::new(),
                reason: "no hosts".into(),
            });
        };
        let host = url.host_str().unwrap_or_default().to_string()
            + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let mut req = self
            .client
            .post(url.clone())
            .headers(self.settings.headers.clone())
            .body(body);
        if gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let transport = |e: reqwest::Error| SendError::Transport {
            host: host.clone(),
            reason: format!("{e:#}"),
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.failed(i, host_down);
                return Err(transport(e));
            }
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                self.failed(i, host_down);
                return Err(transport(e));
            }
        };
        if (200..300).contains(&status) {
            self.hosts.mark_ok(i);
            return Ok(bytes);
        }
        if status >= 500 {
            self.failed(i, host_down);
        } else {
            self.hosts.mark_ok(i);
        }
        Err(SendError::Status {
            host,
            status,
            excerpt: excerpt(&bytes),
        })
    }

    fn failed(&self, i: usize, host_down: &prometheus::IntCounter) {
        let d = self.hosts.mark_failed(i);
        host_down.inc();
        if let Some(u) = self.hosts.base_url(i) {
            let host = crate::config::redact_url(u.as_str());
            tracing::debug!(%host, skip_for = ?d, "elasticsearch host marked down");
        }
    }

    /// Whether any host answers `GET /` with a 2xx.
    pub async fn reachable(&self) -> bool {
        let timeout = self.settings.timeout.min(Duration::from_secs(5));
        for i in 0..self.hosts.len() {
            let Some(u) = self.hosts.base_url(i) else {
                continue;
            };
            let mut url = u.clone();
            let p = format!("{}/", u.path().trim_end_matches('/'));
            url.set_path(&p);
            let r = self
                .client
                .get(url)
                .headers(self.settings.headers.clone())
                .timeout(timeout)
                .send()
                .await;
            if matches!(&r, Ok(resp) if resp.status().is_success()) {
                return true;
            }
        }
        false
    }
}
