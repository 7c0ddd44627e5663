//! The per-client-IP limiter of anonymous requests: the [`Store`]s of all
//! rate shards, one mutex per shard, shared by the HTTP layer and the
//! pipeline's rate stage.
//!
//! The HTTP layer takes the one per-request token ([`RateLimiter::allow`])
//! before it reads a body; the rate stage then takes one token per event of
//! each batch ([`RateLimiter::reserve`]), possibly deferring the batch. An IP
//! always maps to the same shard ([`shard_of`]), so its bucket lives in
//! exactly one store.
//!
//! Invariants: a mutex is never shared between shards and every critical
//! section is a single bucket operation, so the HTTP layer never waits on
//! more than one bucket update; nothing here sleeps or blocks.

use super::{shard_of, shard_stores, RateLimited, Store, StoreError, BATCH_MAX_WAIT};
use parking_lot::Mutex;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The stores of all shards.
pub struct RateLimiter {
    shards: Vec<Mutex<Store>>,
}

impl RateLimiter {
    /// `ip_limit` buckets split over `shards` stores, `event_limit` tokens per
    /// second each (see [`shard_stores`]).
    pub fn new(ip_limit: i64, event_limit: i64, shards: usize) -> Result<Self, StoreError> {
        Ok(RateLimiter {
            shards: shard_stores(ip_limit, event_limit, shards)?
                .into_iter()
                .map(Mutex::new)
                .collect(),
        })
    }

    /// Number of shards (the pipeline runs one rate-stage instance per shard).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The per-request token, taken before the body is read: false means the
    /// request is answered 429 at once.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let k = shard_of(&ip, self.shards.len());
        self.shards[k].lock().allow(ip, Instant::now())
    }

    /// Takes `events` tokens from `ip`'s bucket in shard `shard` for one
    /// batch, possibly into debt; returns how long the batch must wait
    /// (at most [`BATCH_MAX_WAIT`]), or [`RateLimited`] having taken nothing.
    pub fn reserve(
        &self,
        shard: usize,
        ip: IpAddr,
        events: u32,
        now: Instant,
    ) -> Result<Duration, RateLimited> {
        self.shards[shard]
            .lock()
            .reserve(ip, events, now, BATCH_MAX_WAIT)
    }

    /// Gives back tokens of a batch that was reserved but then not accepted.
    pub fn cancel(&self, shard: usize, ip: IpAddr, events: u32) {
        self.shards[shard].lock().cancel(ip, events);
    }
}
