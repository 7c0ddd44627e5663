//! Per-client-IP token buckets (ratelimit.md). Placeholder, completed by the rate-limit issue.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// The rate shard owning `ip`'s bucket (stable for the process lifetime).
pub fn shard_of(ip: &IpAddr, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}
