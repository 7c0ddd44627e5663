//! The HTTP side of the output: the request slots that bound bulks in flight
//! over all indexer instances, the bulk call itself (through the output's
//! [`es::Client`], whose host pool picks hosts round-robin and skips a
//! failing one for a while) and the reachability check.
//!
//! Invariants: at most `max_requests` [`SlotGuard`]s exist at once (a slot is
//! held from flush until every document of the bulk is resolved, retries
//! included); a host is marked down only on
//! connection errors, timeouts and 5xx answers.

use super::config::{EsSettings, BULK_QUERY};
use crate::es;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
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

// ---------------------------------------------------------------- client

/// HTTP client, hosts and settings shared by every indexer instance.
pub struct Service {
    pub settings: EsSettings,
    /// The output's client; its host pool picks and skips hosts.
    pub client: es::Client,
    /// `_bulk` URL (with [`BULK_QUERY`]) of each host, by host index.
    bulk_urls: Vec<Url>,
}

fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]);
    s.replace('\n', " ")
}

impl Service {
    pub fn new(settings: EsSettings, client: es::Client) -> Self {
        let hosts = client.hosts();
        let bulk_urls = (0..hosts.len())
            .filter_map(|i| {
                let mut u = hosts.url(i, "/_bulk")?;
                u.set_query(Some(BULK_QUERY));
                Some(u)
            })
            .collect();
        Service {
            settings,
            client,
            bulk_urls,
        }
    }

    /// POSTs one bulk body to the next host; `Ok` carries the 2xx response body.
    pub async fn send_bulk(
        &self,
        body: Bytes,
        gzip: bool,
        host_down: &prometheus::IntCounter,
    ) -> Result<Bytes, SendError> {
        let i = self.client.hosts().pick();
        let Some(url) = self.bulk_urls.get(i) else {
            return Err(SendError::Transport {
                host: String::new(),
                reason: "no hosts".into(),
            });
        };
        let host = url.host_str().unwrap_or_default().to_string()
            + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let mut req = self
            .client
            .request(reqwest::Method::POST, url.clone())
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
            self.client.hosts().mark_ok(i);
            return Ok(bytes);
        }
        if status >= 500 {
            self.failed(i, host_down);
        } else {
            self.client.hosts().mark_ok(i);
        }
        Err(SendError::Status {
            host,
            status,
            excerpt: excerpt(&bytes),
        })
    }

    fn failed(&self, i: usize, host_down: &prometheus::IntCounter) {
        let d = self.client.hosts().mark_failed(i);
        host_down.inc();
        if let Some(u) = self.client.hosts().base_url(i) {
            tracing::debug!(host = %u, skip_for = ?d, "elasticsearch host marked down");
        }
    }

    /// Whether any host answers `GET /` with a 2xx.
    pub async fn reachable(&self) -> bool {
        let timeout = self.client.timeout().min(Duration::from_secs(5));
        for i in 0..self.client.hosts().len() {
            let Some(u) = self.client.hosts().base_url(i) else {
                continue;
            };
            let mut url = u.clone();
            let p = format!("{}/", u.path().trim_end_matches('/'));
            url.set_path(&p);
            let r = self
                .client
                .request(reqwest::Method::GET, url)
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
