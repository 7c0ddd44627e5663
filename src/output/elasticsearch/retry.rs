//! Every retry decision of the Elasticsearch output; `mod.rs` only runs the
//! loop and asks here.
//!
//! * Whole request (connection error, timeout, or an answer of 401, 403,
//!   408, 429 or 5xx): resent after an exponential delay while the retry
//!   budget lasts. The budget is spent once `retry_budget` has passed since
//!   the bulk's first failure *and* it failed more than `max_retries` times;
//!   any other answer (e.g. 400, 413) is final and its documents fail.
//!   401/403 are retried because credentials or privileges may be fixed
//!   while we wait; the budget bounds it.
//! * Per item (an item answered 429 or 5xx, or missing): only those
//!   documents are resent, each at most `max_retries` times, after the delay
//!   of the bulk's item round.
//! * Delays: `backoff.init` doubling up to `backoff.max`, ±20 % jitter so
//!   many indexers do not retry in step.
//!
//! Invariants: a delay is never above `backoff.max` (+20 % jitter) nor below
//! 1 ms; a bulk is given up only after both bounds of the budget are spent.

use super::config::EsSettings;
use super::service::SendError;
use std::time::{Duration, Instant};

/// Exponential delays.
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

/// The output's retry settings (one per output, shared by every bulk).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    backoff: Backoff,
    max_retries: u32,
    budget: Duration,
}

/// What to do after a whole request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestDecision {
    /// Send the same bulk again after this delay.
    RetryAfter(Duration),
    /// The answer is final (not a transient failure): its documents fail.
    Refused,
    /// Transient, but the retry budget is spent: its documents fail.
    BudgetSpent,
}

impl RetryPolicy {
    pub fn new(backoff: Backoff, max_retries: u32, budget: Duration) -> Self {
        RetryPolicy {
            backoff,
            max_retries,
            budget,
        }
    }

    pub fn from_settings(s: &EsSettings) -> Self {
        Self::new(
            Backoff {
                init: s.backoff_init,
                max: s.backoff_max,
            },
            s.max_retries,
            s.retry_budget,
        )
    }

    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The time part of the retry budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether resending the same bulk may succeed after `e`.
    pub fn transient(e: &SendError) -> bool {
        match e {
            SendError::Transport { .. } => true,
            SendError::Status { status, .. } => {
                matches!(status, 401 | 403 | 408 | 429) || *status >= 500
            }
        }
    }

    /// The retry state of one bulk.
    pub fn start(&self) -> BulkRetries {
        BulkRetries {
            policy: *self,
            first_failure: None,
            failures: 0,
            item_rounds: 0,
        }
    }
}

/// Retry state of one bulk, from its first send to its last document.
#[derive(Debug)]
pub struct BulkRetries {
    policy: RetryPolicy,
    first_failure: Option<Instant>,
    failures: u32,
    item_rounds: u32,
}

impl BulkRetries {
    /// Whole-request failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a whole-request failure and decides.
    pub fn request_failed(&mut self, e: &SendError) -> RequestDecision {
        if !RetryPolicy::transient(e) {
            return RequestDecision::Refused;
        }
        self.failures += 1;
        let first = *self.first_failure.get_or_insert_with(Instant::now);
        if self.failures > self.policy.max_retries && first.elapsed() >= self.policy.budget {
            return RequestDecision::BudgetSpent;
        }
        RequestDecision::RetryAfter(self.policy.backoff.delay(self.failures))
    }

    /// Whether a document resent `resends` times so far, answered 429/5xx,
    /// may be resent again.
    pub fn item_may_retry(&self, resends: u32) -> bool {
        resends < self.policy.max_retries
    }

    /// Starts a round of per-item resends; the delay to wait before it.
    pub fn next_item_round(&mut self) -> Duration {
        self.item_rounds += 1;
        self.policy.backoff.delay(self.item_rounds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32, budget: Duration) -> RetryPolicy {
        RetryPolicy::new(
            Backoff {
                init: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            max_retries,
            budget,
        )
    }

    fn status(status: u16) -> SendError {
        SendError::Status {
            host: "es:9200".into(),
            status,
            excerpt: String::new(),
        }
    }

    fn transport() -> SendError {
        SendError::Transport {
            host: "es:9200".into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn delays_double_up_to_the_maximum_with_bounded_jitter() {
        let b = policy(3, Duration::ZERO).backoff;
        assert_eq!(b.base_delay(1), Duration::from_millis(100));
        assert_eq!(b.base_delay(2), Duration::from_millis(200));
        assert_eq!(b.base_delay(4), Duration::from_millis(800));
        assert_eq!(b.base_delay(5), Duration::from_secs(1));
        assert_eq!(b.base_delay(500), Duration::from_secs(1));
        for a in 1..10 {
            let d = b.delay(a);
            assert!(d <= Duration::from_millis(1200) && d >= Duration::from_millis(80));
        }
    }

    #[test]
    fn transport_errors_429_5xx_and_auth_answers_are_transient() {
        assert!(RetryPolicy::transient(&transport()));
        for s in [401, 403, 408, 429, 500, 502, 503] {
            assert!(RetryPolicy::transient(&status(s)), "{s}");
        }
        for s in [400, 404, 413] {
            assert!(!RetryPolicy::transient(&status(s)), "{s}");
        }
    }

    #[test]
    fn a_final_answer_is_refused_without_spending_the_budget() {
        let mut r = policy(3, Duration::ZERO).start();
        assert_eq!(r.request_failed(&status(400)), RequestDecision::Refused);
        assert_eq!(r.failures(), 0);
    }

    #[test]
    fn the_budget_needs_both_max_retries_failures_and_the_time() {
        let mut r = policy(3, Duration::ZERO).start();
        for _ in 0..3 {
            assert!(matches!(
                r.request_failed(&transport()),
                RequestDecision::RetryAfter(_)
            ));
        }
        assert_eq!(r.request_failed(&status(503)), RequestDecision::BudgetSpent);
        let mut r = policy(0, Duration::from_secs(3600)).start();
        for _ in 0..100 {
            assert!(matches!(
                r.request_failed(&status(429)),
                RequestDecision::RetryAfter(_)
            ));
        }
    }

    #[test]
    fn request_retry_delays_grow_with_the_failures() {
        let mut r = policy(10, Duration::from_secs(3600)).start();
        let delays: Vec<Duration> = (0..5)
            .filter_map(|_| match r.request_failed(&transport()) {
                RequestDecision::RetryAfter(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(delays.len(), 5);
        assert!(delays[4] >= Duration::from_millis(800), "{delays:?}");
    }

    #[test]
    fn a_document_is_resent_at_most_max_retries_times() {
        let r = policy(2, Duration::ZERO).start();
        assert!(r.item_may_retry(0));
        assert!(r.item_may_retry(1));
        assert!(!r.item_may_retry(2));
        assert!(!policy(0, Duration::ZERO).start().item_may_retry(0));
    }

    #[test]
    fn item_rounds_back_off_independently_of_request_failures() {
        let mut r = policy(10, Duration::from_secs(3600)).start();
        let _ = r.request_failed(&transport());
        let _ = r.request_failed(&transport());
        let first = r.next_item_round();
        assert!(first <= Duration::from_millis(120), "{first:?}");
        assert!(r.next_item_round() >= Duration::from_millis(160));
    }
}
