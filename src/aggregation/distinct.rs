//! How many distinct groups fell into an overflow bucket
//! (`*.aggregation.overflow_count`), in fixed memory: linear counting over
//! a 65,536-bit map (8 KiB). Exact while few groups collide (a handful of
//! groups are counted exactly with overwhelming probability); within a few
//! percent up to several hundred thousand groups; never grows.

use std::hash::{Hash, Hasher};

const BITS: usize = 1 << 16;

/// A fixed-size distinct counter.
#[derive(Debug, Clone)]
pub struct Distinct {
    words: Box<[u64; BITS / 64]>,
    set: usize,
}

impl Default for Distinct {
    fn default() -> Self {
        Distinct {
            words: Box::new([0; BITS / 64]),
            set: 0,
        }
    }
}

impl Distinct {
    /// Notes one group by its key.
    pub fn insert(&mut self, key: &impl Hash) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let bit = (h.finish() as usize) & (BITS - 1);
        let (w, b) = (bit / 64, 1u64 << (bit % 64));
        if self.words[w] & b == 0 {
            self.words[w] |= b;
            self.set += 1;
        }
    }

    /// The estimated number of distinct groups noted.
    pub fn count(&self) -> u64 {
        let zero = (BITS - self.set).max(1) as f64;
        let m = BITS as f64;
        (m * (m / zero).ln()).round() as u64
    }

    /// Adds every group noted by `other`.
    pub fn merge(&mut self, other: &Distinct) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= b;
        }
        self.set = self.words.iter().map(|w| w.count_ones() as usize).sum();
    }

    /// Heap bytes of one counter.
    pub const HEAP_BYTES: usize = BITS / 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sets_are_counted_exactly_and_repeats_do_not_count() {
        let mut d = Distinct::default();
        for k in ["dev", "staging", "dev"] {
            d.insert(&k);
        }
        assert_eq!(d.count(), 2);
    }

    #[test]
    fn a_hundred_thousand_groups_are_estimated_within_five_percent() {
        let mut d = Distinct::default();
        for i in 0..100_000u32 {
            d.insert(&i);
        }
        let c = d.count() as f64;
        assert!((c - 100_000.0).abs() < 5_000.0, "{c}");
    }
}
