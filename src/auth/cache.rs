//! The API-key verification cache: a verified key is trusted for a minute
//! without asking Elasticsearch again (as in apm-server, with two
//! deliberate differences).
//!
//! * Key: the API key id **plus a SHA-256 hash of the secret**
//!   ([`CacheKey`]). apm-server keys by id only, so once an id is cached as
//!   valid any secret is accepted with it for a minute; here a different
//!   secret is a miss and is verified again. The secret itself is never
//!   stored.
//! * Lifetime: a fixed TTL (1 minute) from insertion; reads do not extend it.
//! * Limit: `apm-server.auth.api_key.limit` counts only **live** (unexpired)
//!   entries — "at most `limit` distinct API keys verified per minute".
//!   apm-server also counts expired entries that were not purged yet. As in
//!   apm-server, a limit < 1 makes every miss "full".
//!
//! * In-flight verifications hold a reservation ([`Cache::reserve`]) that
//!   counts against the limit, so a burst of concurrent distinct keys cannot
//!   make more than `limit` Elasticsearch calls at once either.
//!
//! Invariants: never more than `max(limit, 0)` entries are held; expiry order
//! equals insertion order (fixed TTL), so purging is amortized O(1) from the
//! front of a queue.

use super::ApiKeyPrivileges;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Entry lifetime (apm-server's).
pub const TTL: Duration = Duration::from_secs(60);

/// API key id + SHA-256 of the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    id: String,
    secret_sha256: [u8; 32],
}

impl CacheKey {
    pub fn new(id: &str, secret: &[u8]) -> Self {
        CacheKey {
            id: id.to_string(),
            secret_sha256: Sha256::digest(secret).into(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash of a low-entropy secret could be brute-forced: never print it.
        f.debug_struct("CacheKey").field("id", &self.id).finish()
    }
}

/// What Elasticsearch said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// At least one of the three privileges is granted.
    Granted {
        privileges: ApiKeyPrivileges,
        username: String,
    },
    /// 401 from Elasticsearch, or all privileges false.
    Denied,
}

/// See the module doc.
#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    limit: i64,
    map: HashMap<CacheKey, (Instant, Verified)>,
    order: VecDeque<(CacheKey, Instant)>,
    /// Verifications in flight (reserved, not yet inserted).
    pending: usize,
}

impl Cache {
    pub fn new(limit: i64, ttl: Duration) -> Self {
        Cache {
            ttl,
            limit,
            map: HashMap::new(),
            order: VecDeque::new(),
            pending: 0,
        }
    }

    fn purge(&mut self, now: Instant) {
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            if let Some((key, at)) = self.order.pop_front() {
                if self.map.get(&key).is_some_and(|(t, _)| *t == at) {
                    self.map.remove(&key);
                }
            }
        }
    }

    /// The live entry for `key`, if any.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Verified> {
        self.purge(now);
        self.map.get(key).map(|(_, v)| v.clone())
    }

    /// Number of live entries.
    pub fn live(&mut self, now: Instant) -> usize {
        self.purge(now);
        self.map.len()
    }

    /// Whether a miss may be verified (and cached) now.
    pub fn has_room(&mut self, now: Instant) -> bool {
        self.limit >= 1 && ((self.live(now) + self.pending) as i64) < self.limit
    }

    /// Reserves room for one verification; false when the limit is reached.
    /// Pair with [`Cache::release`] or [`Cache::complete`].
    pub fn reserve(&mut self, now: Instant) -> bool {
        let ok = self.has_room(now);
        if ok {
            self.pending += 1;
        }
        ok
    }

    /// Gives back a reservation without caching anything.
    pub fn release(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Turns a reservation into a cache entry.
    pub fn complete(&mut self, key: CacheKey, v: Verified, now: Instant) {
        self.release();
        self.purge(now);
        self.order.push_back((key.clone(), now));
        self.map.insert(key, (now, v));
    }

    /// Caches `v` for `key` if there is room (or the key is already held);
    /// returns whether it was cached.
    pub fn insert(&mut self, key: CacheKey, v: Verified, now: Instant) -> bool {
        self.purge(now);
        if !self.map.contains_key(&key) && !self.has_room(now) {
            return false;
        }
        self.order.push_back((key.clone(), now));
        self.map.insert(key, (now, v));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted() -> Verified {
        Verified::Granted {
            privileges: ApiKeyPrivileges {
                event_write: true,
                ..Default::default()
            },
            username: "u".into(),
        }
    }

    #[test]
    fn key_includes_secret_hash() {
        assert_eq!(CacheKey::new("id", b"a"), CacheKey::new("id", b"a"));
        assert_ne!(CacheKey::new("id", b"a"), CacheKey::new("id", b"b"));
        assert_ne!(CacheKey::new("id1", b"a"), CacheKey::new("id2", b"a"));
        assert_eq!(
            format!("{:?}", CacheKey::new("x", b"secret")),
            "CacheKey { id: \"x\" }"
        );
    }

    #[test]
    fn limit_counts_only_live_entries() {
        let t0 = Instant::now();
        let mut c = Cache::new(2, TTL);
        assert!(c.insert(CacheKey::new("a", b"1"), granted(), t0));
        assert!(c.insert(
            CacheKey::new("b", b"1"),
            Verified::Denied,
            t0 + Duration::from_secs(30)
        ));
        assert!(!c.has_room(t0 + Duration::from_secs(59)));
        assert!(!c.insert(
            CacheKey::new("c", b"1"),
            granted(),
            t0 + Duration::from_secs(59)
        ));
        // re-inserting a held key is always allowed
        assert!(c.insert(
            CacheKey::new("b", b"1"),
            Verified::Denied,
            t0 + Duration::from_secs(59)
        ));
        // a expires at t0+60: room again, without `a` being looked up
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(c.live(t1), 1);
        assert!(c.has_room(t1));
        assert_eq!(c.get(&CacheKey::new("a", b"1"), t1), None);
        assert_eq!(c.get(&CacheKey::new("b", b"1"), t1), Some(Verified::Denied));
        // the re-inserted b lives until t0+59+60
        assert_eq!(
            c.get(&CacheKey::new("b", b"1"), t0 + Duration::from_secs(118)),
            Some(Verified::Denied)
        );
        assert_eq!(
            c.get(&CacheKey::new("b", b"1"), t0 + Duration::from_secs(119)),
            None
        );
        assert_eq!(c.live(t0 + Duration::from_secs(119)), 0);
        assert!(c.order.is_empty());
    }

    #[test]
    fn reads_do_not_extend() {
        let t0 = Instant::now();
        let mut c = Cache::new(10, TTL);
        let k = CacheKey::new("a", b"1");
        c.insert(k.clone(), granted(), t0);
        assert_eq!(c.get(&k, t0 + Duration::from_secs(59)), Some(granted()));
        assert_eq!(c.get(&k, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn reservations_count_against_the_limit() {
        let t0 = Instant::now();
        let mut c = Cache::new(2, TTL);
        assert!(c.reserve(t0));
        assert!(c.reserve(t0));
        assert!(!c.reserve(t0));
        c.release();
        assert!(c.reserve(t0));
        c.complete(CacheKey::new("a", b"1"), granted(), t0);
        assert!(!c.reserve(t0));
        c.complete(CacheKey::new("b", b"1"), Verified::Denied, t0);
        assert_eq!(c.live(t0), 2);
        assert!(!c.reserve(t0));
        assert!(c.reserve(t0 + TTL));
    }

    #[test]
    fn limit_below_one_is_always_full() {
        let mut c = Cache::new(0, TTL);
        assert!(!c.has_room(Instant::now()));
        assert!(!c.insert(CacheKey::new("a", b"1"), granted(), Instant::now()));
        let mut c = Cache::new(-5, TTL);
        assert!(!c.has_room(Instant::now()));
    }
}
