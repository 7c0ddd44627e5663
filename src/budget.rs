//! The global memory budget: bytes of request data read but not yet indexed.
//!
//! Shared by the HTTP layer (which acquires), the pipeline (which carries)
//! and the outputs (which release); it imports nothing of ours, so none of
//! them has to import another to use it.
//!
//! A request acquires a [`Permit`] for each batch of lines before handing it
//! to the pipeline; the permit travels with the batch's events and is shared
//! by their documents ([`Ack`]). It is released when the last
//! holder drops it: when every document is indexed or permanently failed, or
//! when the batch is rejected. Invariant: `in_use() <= limit()`, except that a
//! single batch larger than the whole budget is admitted alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    in_use: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit,
            in_use: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// An empty share, to grow with [`Permit::try_grow`].
    pub fn share(self: &Arc<Self>) -> Permit {
        Permit {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    /// Takes `bytes` if they fit now; never waits.
    pub fn try_acquire(self: &Arc<Self>, bytes: usize) -> Option<Permit> {
        let want = bytes.min(self.limit);
        let mut cur = self.in_use.load(Ordering::Relaxed);
        loop {
            if cur + want > self.limit && cur != 0 {
                return None;
            }
            match self.in_use.compare_exchange_weak(
                cur,
                cur + want,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Permit {
                        budget: Arc::clone(self),
                        bytes: want,
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Held by every document until it is indexed or permanently failed: the
/// document's share of its batch's [`Permit`].
pub type Ack = Arc<Permit>;

/// A share of the budget, released on drop.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl Permit {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows this share by `extra` bytes if they fit now; never waits. A
    /// share alone in the budget may grow up to the whole limit.
    pub fn try_grow(&mut self, extra: usize) -> bool {
        let limit = self.budget.limit;
        let delta = (self.bytes + extra).min(limit).saturating_sub(self.bytes);
        let mut cur = self.budget.in_use.load(Ordering::Relaxed);
        loop {
            if cur + delta > limit && cur != self.bytes {
                return false;
            }
            match self.budget.in_use.compare_exchange_weak(
                cur,
                cur + delta,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.bytes += delta;
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back everything above `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget
                .in_use
                .fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }

    /// Moves `bytes` (at most all of this share) into a permit of its own.
    pub fn split(&mut self, bytes: usize) -> Permit {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Permit {
            budget: Arc::clone(&self.budget),
            bytes,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_release() {
        let b = MemoryBudget::new(100);
        let p1 = b.try_acquire(60).unwrap();
        assert!(b.try_acquire(50).is_none());
        let p2 = b.try_acquire(40).unwrap();
        assert_eq!(b.in_use(), 100);
        drop(p1);
        assert_eq!(b.in_use(), 40);
        drop(p2);
        assert_eq!(b.in_use(), 0);
        // larger than the budget: admitted alone, clamped
        let big = b.try_acquire(1000).unwrap();
        assert_eq!(big.bytes(), 100);
        assert!(b.try_acquire(1).is_none());
    }

    #[test]
    fn a_permit_grows_shrinks_and_splits_within_the_limit() {
        let b = MemoryBudget::new(100);
        let mut held = b.try_acquire(0).unwrap();
        assert!(held.try_grow(70));
        let other = b.try_acquire(20).unwrap();
        assert!(!held.try_grow(20), "70 + 20 + 20 > 100");
        assert!(held.try_grow(10));
        let part = held.split(30);
        assert_eq!((held.bytes(), part.bytes(), b.in_use()), (50, 30, 100));
        held.shrink_to(5);
        assert_eq!(b.in_use(), 55);
        drop((part, other));
        // alone in the budget: may grow up to the whole limit, clamped
        assert!(held.try_grow(1000));
        assert_eq!((held.bytes(), b.in_use()), (100, 100));
        drop(held);
        assert_eq!(b.in_use(), 0);
    }
}
