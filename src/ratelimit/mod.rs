//! Per-client-IP token buckets for anonymous requests: each anonymous
//! request takes one token before its body is read, and each of its events
//! one more as its batches pass the pipeline's rate stage.
//!
//! This module is the *state* of one rate shard: a [`Store`] maps client IPs
//! to [`Bucket`]s held in an LRU of a fixed number of entries. It never sleeps
//! and never reads the clock: every call takes `now`, and [`Store::reserve`]
//! returns how long the caller must defer, so an actor can schedule the
//! continuation instead of blocking.
//!
//! # Semantics (golang.org/x/time/rate, apm-server's store)
//! * Bucket capacity = `event_limit × burst_factor` (apm-server: burst factor
//!   3), refill `event_limit` tokens per second, clamped to the capacity.
//!   Tokens may go negative (debt) through [`Store::reserve`].
//! * [`Store::allow`] takes 1 token if at least 1 is available, else nothing.
//! * [`Store::reserve`] takes `n` tokens at once, possibly into debt, and
//!   returns the wait that pays the debt back; it fails taking nothing when
//!   `n > capacity` or the wait would exceed `max_wait`.
//! * `event_limit = 0` (capacity 0) refuses everything.
//! * An IP not yet known gets a new full bucket while the LRU has room. Once
//!   the LRU is full, the least recently used IP is evicted and **its bucket
//!   object, with whatever tokens it has left, is reused** for the new IP, so
//!   cycling through many IPs never yields fresh full buckets.
//! * No time-based expiry; only LRU eviction.
//!
//! # Sharding (`ip_limit` split across K rate shards)
//! The pipeline runs K rate shards; each owns one [`Store`]. An IP always goes
//! to shard [`shard_of`]`(ip, K)` (a stable FNV-1a hash of the address
//! bytes), so one IP's bucket lives in exactly one shard and its requests are
//! serialized by that shard. [`split_ip_limit`] divides `ip_limit` over the K
//! shards as evenly as possible (the first `ip_limit % K` shards get one
//! more), with at least one entry per shard. What this changes for a user
//! compared with apm-server's single LRU of `ip_limit` entries:
//! * the total number of buckets is still `ip_limit` (or K when
//!   `ip_limit < K`, since every shard needs at least one);
//! * eviction happens per shard: a new IP evicts the least recently used IP
//!   *of its own shard*, so with an uneven hash spread a shard may start
//!   reusing buckets before `ip_limit` distinct IPs have been seen overall
//!   (by a few percent for K ≪ `ip_limit`). Reused buckets are never fresh,
//!   so this only ever makes the limit stricter, never looser;
//! * with K = 1 the behaviour is exactly apm-server's.
//!
//! Invariants: the LRU never holds more than its size; a bucket's tokens
//! never exceed its capacity; a failed call changes nothing.

mod limiter;

pub use limiter::RateLimiter;

use lru::LruCache;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

/// apm-server's hard-coded burst multiplier (capacity = 3 × event_limit).
pub const DEFAULT_BURST_FACTOR: i64 = 3;

/// How long an intake batch may wait for tokens before its request is
/// answered 429 (apm-server waits up to one second as well).
pub const BATCH_MAX_WAIT: Duration = Duration::from_secs(1);

/// The key used for requests whose client IP is unknown (e.g. a Unix-socket
/// peer without forwarding headers): all of them share one bucket.
pub const UNKNOWN_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The store key for an optional client IP ([`UNKNOWN_IP`] when absent).
pub fn key_of(ip: Option<IpAddr>) -> IpAddr {
    ip.unwrap_or(UNKNOWN_IP)
}

/// Invalid store settings: stop the server at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("invalid rate limit ip_limit {0}: must be > 0")]
    IpLimit(i64),
    #[error("invalid rate limit event_limit {0}: must be >= 0")]
    EventLimit(i64),
    #[error("invalid rate limit burst factor {0}: must be >= 0")]
    BurstFactor(i64),
}

/// The caller exceeded its rate limit; nothing was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded")]
pub struct RateLimited;

/// One token bucket (x/time/rate `Limiter` without the clock).
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    /// Identity of the bucket object (survives reuse for another IP).
    id: u64,
}

impl Bucket {
    /// Tokens after refilling up to `now` (does not change the bucket).
    fn advanced(&self, now: Instant, rate: f64, capacity: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * rate).min(capacity)
    }
}

/// The per-shard map client IP → token bucket (see the module doc).
#[derive(Debug)]
pub struct Store {
    lru: LruCache<IpAddr, Bucket>,
    rate: f64,
    capacity: f64,
    next_id: u64,
}

impl Store {
    /// `ip_limit` buckets of capacity `event_limit × burst_factor`, refilled
    /// at `event_limit` per second. Rejects `ip_limit ≤ 0`, `event_limit < 0`
    /// and `burst_factor < 0`.
    pub fn new(ip_limit: i64, event_limit: i64, burst_factor: i64) -> Result<Self, StoreError> {
        if ip_limit <= 0 {
            return Err(StoreError::IpLimit(ip_limit));
        }
        if event_limit < 0 {
            return Err(StoreError::EventLimit(event_limit));
        }
        if burst_factor < 0 {
            return Err(StoreError::BurstFactor(burst_factor));
        }
        let size = usize::try_from(ip_limit)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or(StoreError::IpLimit(ip_limit))?;
        Ok(Store {
            lru: LruCache::new(size),
            rate: event_limit as f64,
            capacity: (event_limit as f64) * (burst_factor as f64),
            next_id: 0,
        })
    }

    #[cfg(test)]
    /// Bucket capacity in tokens.
    fn capacity(&self) -> f64 {
        self.capacity
    }

    #[cfg(test)]
    /// Number of IPs currently holding a bucket.
    fn len(&self) -> usize {
        self.lru.len()
    }

    #[cfg(test)]
    /// Maximum number of IPs (the LRU size).
    fn ip_limit(&self) -> usize {
        self.lru.cap().get()
    }

    /// Get-or-insert with bucket reuse on eviction; marks `ip` most recently used.
    fn bucket(&mut self, ip: IpAddr, now: Instant) -> &mut Bucket {
        if !self.lru.contains(&ip) {
            let reused = if self.lru.len() >= self.lru.cap().get() {
                self.lru.pop_lru().map(|(_, b)| b)
            } else {
                None
            };
            let bucket = match reused {
                Some(b) => b,
                None => {
                    self.next_id += 1;
                    Bucket {
                        tokens: self.capacity,
                        last: now,
                        id: self.next_id,
                    }
                }
            };
            self.lru.push(ip, bucket);
        }
        let (capacity, id) = (self.capacity, self.next_id + 1);
        self.lru.get_or_insert_mut(ip, || Bucket {
            tokens: capacity,
            last: now,
            id,
        })
    }

    /// Takes one token for `ip` if available: the per-request check made
    /// before a body is read (no token: 429 at once).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.reserve(ip, 1, now, Duration::ZERO).is_ok()
    }

    /// Takes `n` tokens for `ip` now, possibly into debt, and returns how long
    /// the caller must defer before proceeding (zero if none). Fails, taking
    /// nothing, when `n` exceeds the capacity or the wait would exceed
    /// `max_wait`. Never sleeps.
    pub fn reserve(
        &mut self,
        ip: IpAddr,
        n: u32,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Duration, RateLimited> {
        let (rate, capacity) = (self.rate, self.capacity);
        let b = self.bucket(ip, now);
        let n = f64::from(n);
        if n > capacity {
            return Err(RateLimited);
        }
        let tokens = b.advanced(now, rate, capacity);
        let left = tokens - n;
        let wait = if left >= 0.0 {
            Duration::ZERO
        } else if rate > 0.0 {
            let secs = -left / rate;
            if secs > max_wait.as_secs_f64() {
                return Err(RateLimited);
            }
            Duration::from_secs_f64(secs)
        } else {
            return Err(RateLimited);
        };
        if wait > max_wait {
            return Err(RateLimited);
        }
        b.tokens = left;
        b.last = b.last.max(now);
        Ok(wait)
    }

    /// Gives back `n` tokens of an earlier reservation (e.g. the request was
    /// cancelled while deferring). Approximate: the tokens are simply added
    /// back, clamped to the capacity; an evicted IP is ignored. Does not
    /// change the LRU order.
    pub fn cancel(&mut self, ip: IpAddr, n: u32) {
        let capacity = self.capacity;
        if let Some(b) = self.lru.peek_mut(&ip) {
            b.tokens = (b.tokens + f64::from(n)).min(capacity);
        }
    }

    #[cfg(test)]
    /// Tokens `ip` holds at `now`, without touching the LRU (None if unknown).
    fn tokens(&self, ip: &IpAddr, now: Instant) -> Option<f64> {
        self.lru
            .peek(ip)
            .map(|b| b.advanced(now, self.rate, self.capacity))
    }

    /// Identity of the bucket object `ip` holds (tests: reuse on eviction).
    pub fn bucket_id(&self, ip: &IpAddr) -> Option<u64> {
        self.lru.peek(ip).map(|b| b.id)
    }
}

/// The shard (0..shards) that owns `ip`: a stable FNV-1a hash of the address
/// family and bytes, identical across runs, builds and platforms.
pub fn shard_of(ip: &IpAddr, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |byte: u8| {
        h ^= u64::from(byte);
        h = h.wrapping_mul(PRIME);
    };
    match ip {
        IpAddr::V4(v4) => {
            feed(4);
            v4.octets().into_iter().for_each(&mut feed);
        }
        IpAddr::V6(v6) => {
            feed(6);
            v6.octets().into_iter().for_each(&mut feed);
        }
    }
    // Fold the high bits in: FNV's low bits alone are weak for short keys.
    let h = h ^ (h >> 32);
    (h % shards as u64) as usize
}

/// Splits `ip_limit` over `shards` stores: as even as possible, the first
/// `ip_limit % shards` get one more, each at least 1 (see the module doc).
pub fn split_ip_limit(ip_limit: usize, shards: usize) -> Vec<usize> {
    let shards = shards.max(1);
    let base = ip_limit / shards;
    let extra = ip_limit % shards;
    (0..shards)
        .map(|i| (base + usize::from(i < extra)).max(1))
        .collect()
}

/// One [`Store`] per rate shard, `ip_limit` split with [`split_ip_limit`],
/// each with apm-server's burst factor 3. Validates like [`Store::new`].
pub fn shard_stores(
    ip_limit: i64,
    event_limit: i64,
    shards: usize,
) -> Result<Vec<Store>, StoreError> {
    if ip_limit <= 0 {
        return Err(StoreError::IpLimit(ip_limit));
    }
    let total = usize::try_from(ip_limit).map_err(|_| StoreError::IpLimit(ip_limit))?;
    split_ip_limit(total, shards)
        .into_iter()
        .map(|n| Store::new(n as i64, event_limit, DEFAULT_BURST_FACTOR))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // upstream case K.91
    #[test]
    fn invalid_ip_event_or_burst_limits_are_refused() {
        assert_eq!(Store::new(-1, 1, 3).unwrap_err(), StoreError::IpLimit(-1));
        assert_eq!(Store::new(0, 1, 3).unwrap_err(), StoreError::IpLimit(0));
        assert_eq!(
            Store::new(1, -1, 3).unwrap_err(),
            StoreError::EventLimit(-1)
        );
        assert!(Store::new(1, 1, -1).is_err());
        assert!(Store::new(1, 0, 3).is_ok());
    }

    // upstream case K.92
    #[test]
    fn a_new_ip_in_a_full_lru_reuses_the_evicted_bucket() {
        let now = Instant::now();
        let mut s = Store::new(2, 1, 3).unwrap();
        let (a, b, c) = (ip("127.0.0.1"), ip("127.0.0.2"), ip("127.0.0.3"));
        for _ in 0..3 {
            assert!(s.allow(a, now));
        }
        let a_bucket = s.bucket_id(&a).unwrap();
        for _ in 0..2 {
            assert!(s.allow(b, now));
        }
        let b_bucket = s.bucket_id(&b).unwrap();
        // C evicts A and reuses A's empty bucket.
        assert!(!s.allow(c, now));
        assert_eq!(s.bucket_id(&c), Some(a_bucket));
        assert_eq!(s.bucket_id(&a), None);
        // A again evicts B and reuses B's bucket with 1 token left.
        assert!(s.allow(a, now));
        assert!(!s.allow(a, now));
        assert_eq!(s.bucket_id(&a), Some(b_bucket));
        assert_ne!(s.bucket_id(&a), s.bucket_id(&c));
        assert_eq!(s.len(), 2);
    }

    // upstream case K.93
    #[test]
    fn a_burst_factor_of_zero_refuses_every_request() {
        let now = Instant::now();
        let mut s = Store::new(1, 1, 0).unwrap();
        assert!(!s.allow(ip("1.2.3.4"), now));
    }

    // upstream case K.94
    #[test]
    fn burst_factors_one_and_two_allow_that_many_requests_at_once() {
        let now = Instant::now();
        let mut s = Store::new(1, 1, 1).unwrap();
        assert!(s.allow(ip("1.2.3.4"), now));
        assert!(!s.allow(ip("1.2.3.4"), now));
        let mut s = Store::new(1, 1, 2).unwrap();
        assert!(s.allow(ip("1.2.3.4"), now));
        assert!(s.allow(ip("1.2.3.4"), now));
        assert!(!s.allow(ip("1.2.3.4"), now));
    }

    // upstream case K.95 and worked example 4
    #[test]
    fn cycling_through_more_ips_than_the_lru_holds_never_yields_fresh_buckets() {
        let now = Instant::now();
        let mut s = Store::new(2, 1, 1).unwrap();
        assert!(s.allow(ip("10.1.1.1"), now));
        assert!(!s.allow(ip("10.1.1.1"), now));
        assert!(s.allow(ip("10.1.1.2"), now));
        // evicts 10.1.1.1's empty bucket and reuses it
        assert!(!s.allow(ip("10.1.1.3"), now));
    }

    #[test]
    fn event_limit_zero_refuses_everything() {
        let now = Instant::now();
        let mut s = Store::new(10, 0, 3).unwrap();
        assert!(!s.allow(ip("1.1.1.1"), now));
        assert_eq!(
            s.reserve(ip("1.1.1.1"), 1, now, Duration::from_secs(100)),
            Err(RateLimited)
        );
        assert!(!s.allow(ip("1.1.1.1"), now + Duration::from_secs(3600)));
    }

    #[test]
    fn worked_examples_section7() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut s = Store::new(2, 5, 3).unwrap();
        assert_eq!(s.capacity(), 15.0);
        // One request with 15 events from .13: 1 + 10 + 5 tokens.
        let a = ip("10.11.12.13");
        assert!(s.allow(a, t0));
        assert_eq!(s.reserve(a, 10, t0, BATCH_MAX_WAIT), Ok(Duration::ZERO));
        let w = s.reserve(a, 5, t0, BATCH_MAX_WAIT).unwrap();
        assert!((w.as_secs_f64() - 0.2).abs() < 1e-9, "{w:?}");
        assert!((s.tokens(&a, t0).unwrap() + 1.0).abs() < 1e-9);
        // Three requests of 5 events from .14, each deferring as needed.
        let b = ip("10.11.12.14");
        let mut t = 10;
        for _ in 0..3 {
            assert!(s.allow(b, ms(t)));
            let w = s.reserve(b, 5, ms(t), BATCH_MAX_WAIT).unwrap();
            assert!(w <= BATCH_MAX_WAIT);
            t += w.as_millis() as u64 + 1;
        }
        // A third IP reuses the least recently used bucket (.13's, depleted):
        // 429 at the middleware or on the first batch of 10 events.
        let c = ip("10.11.12.15");
        assert!(s.tokens(&a, ms(t)).unwrap() < 5.0);
        let ok = s.allow(c, ms(t)) && s.reserve(c, 10, ms(t), BATCH_MAX_WAIT).is_ok();
        assert!(!ok);
        assert_eq!(s.tokens(&a, ms(t)), None, ".13 was evicted");
    }

    #[test]
    fn reserve_fails_taking_nothing() {
        let now = Instant::now();
        let mut s = Store::new(1, 10, 3).unwrap();
        let a = ip("192.0.2.1");
        // more than capacity
        assert_eq!(s.reserve(a, 31, now, BATCH_MAX_WAIT), Err(RateLimited));
        assert_eq!(s.tokens(&a, now), Some(30.0));
        // into debt of exactly 1 s is fine
        assert_eq!(s.reserve(a, 30, now, BATCH_MAX_WAIT), Ok(Duration::ZERO));
        assert_eq!(
            s.reserve(a, 10, now, BATCH_MAX_WAIT),
            Ok(Duration::from_secs(1))
        );
        // a further token would need > 1 s: refused, nothing taken
        assert_eq!(s.reserve(a, 1, now, BATCH_MAX_WAIT), Err(RateLimited));
        assert_eq!(s.tokens(&a, now), Some(-10.0));
        // refill pays the debt back
        let later = now + Duration::from_secs(2);
        assert_eq!(s.tokens(&a, later), Some(10.0));
        assert!(s.allow(a, later));
        // refill is clamped to the capacity
        assert_eq!(s.tokens(&a, later + Duration::from_secs(3600)), Some(30.0));
    }

    #[test]
    fn cancel_gives_back() {
        let now = Instant::now();
        let mut s = Store::new(1, 10, 3).unwrap();
        let a = ip("192.0.2.1");
        s.reserve(a, 30, now, BATCH_MAX_WAIT).unwrap();
        s.reserve(a, 5, now, BATCH_MAX_WAIT).unwrap();
        s.cancel(a, 5);
        assert_eq!(s.tokens(&a, now), Some(0.0));
        s.cancel(a, 100);
        assert_eq!(s.tokens(&a, now), Some(30.0));
        s.cancel(ip("192.0.2.99"), 5); // unknown: ignored
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let now = Instant::now() + Duration::from_secs(10);
        let mut s = Store::new(1, 1, 1).unwrap();
        let a = ip("192.0.2.1");
        assert!(s.allow(a, now));
        assert!(!s.allow(a, now - Duration::from_secs(5)));
        assert!(s.allow(a, now + Duration::from_secs(1)));
    }

    #[test]
    fn cycling_many_ips_never_gets_fresh_buckets() {
        let now = Instant::now();
        let mut s = Store::new(1000, 300, 3).unwrap();
        // Fill the LRU with 1,000 IPs that each drain their bucket.
        let ipn = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..1000 {
            assert_eq!(
                s.reserve(ipn(i), 900, now, Duration::ZERO),
                Ok(Duration::ZERO)
            );
        }
        assert_eq!(s.len(), 1000);
        // 10,000 further distinct IPs: every one reuses a drained bucket.
        for i in 1000..11_000 {
            assert!(!s.allow(ipn(i), now), "fresh bucket for IP #{i}");
            assert_eq!(s.tokens(&ipn(i), now), Some(0.0));
        }
        assert_eq!(s.len(), 1000);
    }

    #[test]
    fn unknown_ip_key() {
        assert_eq!(key_of(None), UNKNOWN_IP);
        assert_eq!(key_of(Some(ip("::1"))), ip("::1"));
    }

    #[test]
    fn sharding() {
        assert_eq!(shard_of(&ip("10.0.0.1"), 1), 0);
        assert_eq!(shard_of(&ip("10.0.0.1"), 0), 0);
        // stable: the same IP always maps to the same shard
        let s = shard_of(&ip("10.0.0.1"), 4);
        for _ in 0..10 {
            assert_eq!(shard_of(&ip("10.0.0.1"), 4), s);
        }
        // roughly even spread over sequential addresses
        let mut counts = [0usize; 4];
        for i in 0..4000u32 {
            counts[shard_of(&IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        // IPv4 and its IPv4-mapped IPv6 form are distinct keys
        let _ = shard_of(&ip("::ffff:10.0.0.1"), 4);
        assert_eq!(split_ip_limit(1000, 1), vec![1000]);
        assert_eq!(split_ip_limit(1000, 3), vec![334, 333, 333]);
        assert_eq!(split_ip_limit(2, 4), vec![1, 1, 1, 1]);
        assert_eq!(split_ip_limit(10, 0), vec![10]);
        assert_eq!(split_ip_limit(1000, 4).iter().sum::<usize>(), 1000);
        let stores = shard_stores(1000, 300, 3).unwrap();
        assert_eq!(
            stores.iter().map(Store::ip_limit).collect::<Vec<_>>(),
            vec![334, 333, 333]
        );
        assert_eq!(stores[0].capacity(), 900.0);
        assert_eq!(shard_stores(0, 300, 3).unwrap_err(), StoreError::IpLimit(0));
        assert_eq!(
            shard_stores(10, -1, 3).unwrap_err(),
            StoreError::EventLimit(-1)
        );
    }
}
