//! Hosts of one cluster used round-robin; a host that failed (transport
//! error, 5xx) is skipped for `backoff.init · 2^(failures − 1)`, at most
//! `backoff.max`, and used again as soon as it answers.
//!
//! Invariants: [`HostPool::pick`] always returns an index of an existing
//! host when the pool is not empty (when every host is skipped, the one back
//! first); state is per host behind a short lock, never held across I/O.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use url::Url;

#[derive(Default)]
struct HostState {
    dead_until: Option<Instant>,
    fails: u32,
}

struct Host {
    base: Url,
    state: Mutex<HostState>,
}

/// Hosts used round-robin; a failed host is skipped for a while.
pub struct HostPool {
    hosts: Vec<Host>,
    next: AtomicUsize,
    init: Duration,
    max: Duration,
}

impl std::fmt::Debug for HostPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.hosts.iter().map(|h| h.base.as_str()))
            .finish()
    }
}

impl HostPool {
    /// `urls` are base URLs (no trailing `/`); `init`/`max` bound the skip.
    pub fn new(urls: &[Url], init: Duration, max: Duration) -> Self {
        HostPool {
            hosts: urls
                .iter()
                .map(|u| Host {
                    base: u.clone(),
                    state: Mutex::new(HostState::default()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            init: init.max(Duration::from_millis(1)),
            max: max.max(init),
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

    /// Host `i` answered: it is used in turn again.
    pub fn mark_ok(&self, i: usize) {
        if let Some(h) = self.hosts.get(i) {
            let mut s = h.state.lock();
            s.fails = 0;
            s.dead_until = None;
        }
    }

    /// Base URL of host `i` (`scheme://host:port[/prefix]`).
    pub fn base_url(&self, i: usize) -> Option<&Url> {
        self.hosts.get(i).map(|h| &h.base)
    }

    /// Host `i`'s base URL joined with `path` (which starts with `/`).
    pub fn url(&self, i: usize, path: &str) -> Option<Url> {
        let base = self.base_url(i)?;
        let mut u = base.clone();
        u.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
        Some(u)
    }

    /// Every base URL, in configuration order.
    pub fn urls(&self) -> impl Iterator<Item = &Url> {
        self.hosts.iter().map(|h| &h.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> HostPool {
        let urls: Vec<Url> = (0..n)
            .map(|i| Url::parse(&format!("http://h{i}:9200")).expect("url"))
            .collect();
        HostPool::new(&urls, Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn hosts_are_used_in_turn() {
        let p = pool(3);
        let picked: Vec<usize> = (0..6).map(|_| p.pick()).collect();
        assert_eq!(picked, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_failed_host_is_skipped_until_it_answers_again() {
        let p = pool(2);
        assert_eq!(p.mark_failed(0), Duration::from_secs(1));
        assert!((0..4).all(|_| p.pick() == 1));
        p.mark_ok(0);
        let picked: Vec<usize> = (0..2).map(|_| p.pick()).collect();
        assert!(picked.contains(&0));
    }

    #[test]
    fn consecutive_failures_double_the_skip_up_to_the_maximum() {
        let p = pool(1);
        let skips: Vec<u64> = (0..8).map(|_| p.mark_failed(0).as_secs()).collect();
        assert_eq!(skips, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn with_every_host_down_the_one_back_first_is_used() {
        let p = pool(2);
        p.mark_failed(0);
        p.mark_failed(0);
        p.mark_failed(1);
        assert!((0..3).all(|_| p.pick() == 1));
    }

    #[test]
    fn paths_join_under_the_host_prefix() {
        let urls = [Url::parse("https://es:9243/prefix").expect("url")];
        let p = HostPool::new(&urls, Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(
            p.url(0, "/_bulk").expect("url").as_str(),
            "https://es:9243/prefix/_bulk"
        );
    }
}
