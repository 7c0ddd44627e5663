//! Durations as apm-server aggregates them: an HDR histogram with two
//! significant figures over 1 µs … 1 h, kept sparse (only the buckets that
//! were hit), each bucket reported by its highest equivalent value.
//!
//! The bucket arithmetic is the `hdrhistogram` crate's; one shared template
//! histogram answers "which bucket holds this value" so that no group pays
//! for a dense counts array. Counts are weighted by the representative count
//! of the event (`1 / sample_rate`) and kept in thousandths so fractional
//! weights add up; they are rounded when written.
//!
//! Invariant: a [`Durations`] holds at most one entry per HDR bucket
//! (≈ 3,400 for this range and precision), whatever is recorded.

use hdrhistogram::Histogram;
use std::sync::OnceLock;

/// Largest recordable duration in microseconds (one hour); longer ones are clamped.
pub const MAX_MICROS: u64 = 3_600_000_000;
/// Counts are kept in these units per event so that fractional
/// representative counts accumulate exactly enough.
const SCALE: f64 = 1000.0;

fn template() -> &'static Histogram<u64> {
    static T: OnceLock<Histogram<u64>> = OnceLock::new();
    T.get_or_init(|| {
        Histogram::new_with_bounds(1, MAX_MICROS, 2)
            .expect("1 µs .. 1 h with 2 significant figures are valid bounds")
    })
}

/// The value an HDR histogram reports for the bucket holding `micros`.
pub fn bucket_value(micros: u64) -> u64 {
    template().highest_equivalent(micros.clamp(1, MAX_MICROS))
}

/// A sparse, weighted duration histogram.
#[derive(Debug, Default, Clone)]
pub struct Durations {
    /// (bucket value in µs, weighted count in thousandths), sorted by value.
    buckets: Vec<(u64, u64)>,
}

impl Durations {
    /// Records one event of `micros` weighing `weight` (its representative count).
    pub fn record(&mut self, micros: u64, weight: f64) {
        let v = bucket_value(micros);
        let w = (weight.max(0.0) * SCALE).round() as u64;
        match self.buckets.binary_search_by_key(&v, |b| b.0) {
            Ok(i) => self.buckets[i].1 += w,
            Err(i) => self.buckets.insert(i, (v, w)),
        }
    }

    /// Adds every bucket of `other`.
    pub fn merge(&mut self, other: &Durations) {
        for &(v, w) in &other.buckets {
            match self.buckets.binary_search_by_key(&v, |b| b.0) {
                Ok(i) => self.buckets[i].1 += w,
                Err(i) => self.buckets.insert(i, (v, w)),
            }
        }
    }

    /// `(values, counts)` as written to `transaction.duration.histogram`;
    /// buckets whose rounded count is zero are left out.
    pub fn values_counts(&self) -> (Vec<u64>, Vec<u64>) {
        self.buckets
            .iter()
            .map(|&(v, w)| (v, (w as f64 / SCALE).round() as u64))
            .filter(|&(_, c)| c > 0)
            .unzip()
    }

    /// `(value_count, sum)` of `transaction.duration.summary`, from the
    /// written histogram (as apm-server does: the sum is of bucket values).
    pub fn summary(&self) -> (u64, u64) {
        let (values, counts) = self.values_counts();
        let n = counts.iter().sum();
        let sum = values.iter().zip(&counts).map(|(v, c)| v * c).sum();
        (n, sum)
    }

    /// Bytes this histogram holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u64, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_is_reported_as_the_upper_edge_of_its_bucket() {
        assert_eq!(bucket_value(1_000_000), 1_003_519);
        assert_eq!(bucket_value(38_853), 38_911);
    }

    #[test]
    fn weighted_counts_round_when_written_and_the_summary_sums_bucket_values() {
        let mut d = Durations::default();
        d.record(1_000_000, 1.0);
        d.record(1_000_001, 1.0);
        d.record(38_853, 10.0);
        assert_eq!(d.values_counts(), (vec![38_911, 1_003_519], vec![10, 2]));
        assert_eq!(d.summary(), (12, 38_911 * 10 + 1_003_519 * 2));
        let mut e = Durations::default();
        e.record(38_853, 0.5);
        e.record(38_853, 0.5);
        d.merge(&e);
        assert_eq!(d.values_counts().1, vec![11, 2]);
    }
}
