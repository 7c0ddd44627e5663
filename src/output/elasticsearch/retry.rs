//! Back-off policy: exponential delays from `backoff.init` doubling up to
//! `backoff.max`, with ±20 % jitter so many indexers do not retry in step,
//! and the retry budget that bounds whole-request retries.
//!
//! Invariants: a delay is never above `backoff.max` (+20 % jitter) nor below
//! 1 ms; `Budget::exhausted` turns true only after both the time budget has
//! passed since the first failure and at least `min_attempts` failures.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub init: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before retry number `attempt` (1-based), without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        self.init.saturating_mul(1u32 << shift).min(self.max)
    }

    /// Delay before retry number `attempt` (1-based), with jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.base_delay(attempt);
        let factor: f64 = 0.8 + rand::random::<f64>() * 0.4;
        base.mul_f64(factor).max(Duration::from_millis(1))
    }
}

/// The bound on whole-request retries of one bulk.
#[derive(Debug)]
pub struct Budget {
    budget: Duration,
    min_attempts: u32,
    first_failure: Option<Instant>,
    pub failures: u32,
}

impl Budget {
    pub fn new(budget: Duration, min_attempts: u32) -> Self {
        Budget {
            budget,
            min_attempts,
            first_failure: None,
            failures: 0,
        }
    }

    /// Records a failure; returns whether the bulk may still be retried.
    pub fn fail(&mut self) -> bool {
        self.failures += 1;
        let first = *self.first_failure.get_or_insert_with(Instant::now);
        !(self.failures > self.min_attempts && first.elapsed() >= self.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_capped() {
        let b = Backoff {
            init: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(4), Duration::from_millis(800));
        assert_eq!(b.base_delay(5), Duration::from_secs(1));
        assert_eq!(b.base_delay(500), Duration::from_secs(1));
        for a in 1..10 {
            assert!(b.delay(a) <= Duration::from_millis(1200));
        }
    }

    #[test]
    fn budget_needs_time_and_attempts() {
        let mut b = Budget::new(Duration::from_millis(0), 3);
        assert!(b.fail());
        assert!(b.fail());
        assert!(b.fail());
        assert!(!b.fail());
        let mut b = Budget::new(Duration::from_secs(3600), 0);
        for _ in 0..100 {
            assert!(b.fail());
        }
    }
}
