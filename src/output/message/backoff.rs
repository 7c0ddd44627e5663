//! Waiting between retries for the broker outputs, which run on indexer
//! threads (plain OS threads, so sleeping there is allowed and is how
//! back-pressure reaches the intake): exponential delays from `init`
//! doubling up to `max`, cut short once the shutdown deadline is announced.

use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The shutdown deadline shared by an output's factory and its instances.
#[derive(Default)]
pub struct Shutdown {
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Shutdown {
    /// Announces the deadline (the earliest one wins) and wakes sleepers.
    pub fn begin(&self, deadline: Instant) {
        let mut d = self.deadline.lock();
        *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        self.changed.notify_all();
    }

    /// The deadline once shutdown has begun.
    pub fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }

    /// Whether work still retrying must give up now.
    pub fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps `delay`, or until the deadline if that comes first; returns
    /// false when the deadline has passed (the caller gives up).
    pub fn sleep(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        let mut d = self.deadline.lock();
        loop {
            let end = d.map_or(until, |dl| dl.min(until));
            let now = Instant::now();
            if now >= end {
                return d.is_none_or(|dl| now < dl);
            }
            self.changed.wait_for(&mut d, end - now);
        }
    }
}

/// Delays of one retry sequence.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(init: Duration, max: Duration) -> Self {
        Backoff {
            next: init.max(Duration::from_millis(1)),
            max: max.max(init),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3));
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 3, 3]);
    }

    #[test]
    fn a_sleep_ends_at_the_shutdown_deadline() {
        let s = std::sync::Arc::new(Shutdown::default());
        let s2 = std::sync::Arc::clone(&s);
        let t = std::thread::spawn(move || s2.sleep(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        s.begin(Instant::now());
        assert!(!t.join().unwrap());
        assert!(s.expired());
    }

    #[test]
    fn a_sleep_before_any_deadline_completes() {
        let s = Shutdown::default();
        assert!(s.sleep(Duration::from_millis(5)));
    }
}
