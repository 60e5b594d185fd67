//! A log-bucketed latency histogram: four buckets per doubling from
//! 100 µs, so a quantile read from it is within 19% of the true value
//! (the bucket's upper bound is reported). Small enough to store one per
//! tenant per day.

use serde::{Deserialize, Serialize};

/// Smallest bucket bound, in microseconds.
const BASE_US: f64 = 100.0;
/// Buckets per doubling.
const PER_DOUBLING: f64 = 4.0;
/// Number of buckets: 100 µs · 2^(80/4) ≈ 105 s; slower lands in the last.
pub const BUCKETS: usize = 80;

/// Counts per latency bucket (trailing empty buckets are not stored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Histogram(Vec<u64>);

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros as f64 <= BASE_US {
            return 0;
        }
        let index = ((micros as f64 / BASE_US).log2() * PER_DOUBLING).ceil();
        // `index` is finite and positive here; the cast saturates.
        (index as usize).min(BUCKETS - 1)
    }

    /// Upper bound of bucket `i`, in milliseconds.
    fn upper_ms(i: usize) -> f64 {
        BASE_US * (i as f64 / PER_DOUBLING).exp2() / 1000.0
    }

    /// Counts one observation.
    pub fn record(&mut self, micros: u64) {
        let i = Self::bucket(micros);
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] += 1;
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Histogram) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            *mine += theirs;
        }
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q`-quantile (0..=1) in milliseconds, as its bucket's upper
    /// bound; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some((Self::upper_ms(i) * 1000.0).round() / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(us * 100); // 0.1 ms .. 100 ms, uniform
        }
        let p50 = h.quantile_ms(0.5).expect("p50");
        let p99 = h.quantile_ms(0.99).expect("p99");
        assert!((50.0..=50.0 * 1.19).contains(&p50), "p50 {p50}");
        assert!((99.0..=99.0 * 1.19).contains(&p99), "p99 {p99}");
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn merge_adds_and_extremes_are_clamped() {
        let mut a = Histogram::default();
        a.record(0);
        let mut b = Histogram::default();
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        // The last bucket (above ~88 s) holds everything longer.
        assert!(a.quantile_ms(1.0).expect("max") > 80_000.0);
        assert_eq!(a.quantile_ms(0.5), Some(0.1));
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }
}
