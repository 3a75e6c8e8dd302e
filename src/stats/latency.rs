//! Latency histograms: recorded on the request path with a couple of
//! relaxed atomic adds, read as counts, sums, extremes and percentiles.
//!
//! Buckets are log-linear: four per doubling, so any percentile read from
//! them is within 19% of the true value, from 1 unit up to 2^40 units (12
//! days in microseconds); larger values land in the last bucket. A bucket
//! holds the values `v` with `lowest(i) < v <= lowest(i + 1)` (in terms of
//! `v - 1`, bucket `i` starts at `lowest(i)`), so the bucket bounds at
//! powers of two are exactly Prometheus's "less than or equal" buckets.

use std::sync::atomic::{AtomicU64, Ordering};

/// Doublings covered before the last bucket.
const MAX_EXP: u32 = 40;
/// Buckets in a histogram.
pub const BUCKETS: usize = 4 * MAX_EXP as usize;

/// The bucket of a value.
fn index(v: u64) -> usize {
    let x = v.saturating_sub(1);
    if x < 4 {
        return x as usize;
    }
    let k = 63 - x.leading_zeros();
    if k > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (x >> (k - 2)) & 3;
    (4 * (k - 1) + sub as u32) as usize
}

/// The smallest `v - 1` bucket `i` holds (`u64::MAX` past the last).
fn lowest(i: usize) -> u64 {
    if i >= BUCKETS {
        return u64::MAX;
    }
    if i < 4 {
        return i as u64;
    }
    let (k, sub) = (i as u32 / 4 + 1, i as u64 % 4);
    (4 + sub) << (k - 2)
}

/// The largest value bucket `i` holds.
fn upper(i: usize) -> u64 {
    lowest(i + 1)
}

/// A histogram of values in one unit (microseconds or milliseconds).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
        // The extremes rarely move: look before writing.
        if v < self.min.load(Ordering::Relaxed) {
            self.min.fetch_min(v, Ordering::Relaxed);
        }
        if v > self.max.load(Ordering::Relaxed) {
            self.max.fetch_max(v, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count = buckets.iter().sum();
        Snapshot {
            buckets,
            count,
            sum: self.sum.load(Ordering::Relaxed),
            min: self.min.load(Ordering::Relaxed),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// A histogram at one moment, or the change between two moments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per bucket; empty when nothing was ever recorded.
    buckets: Vec<u64>,
    pub count: u64,
    pub sum: u64,
    min: u64,
    max: u64,
}

impl Snapshot {
    pub fn minimum(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    pub fn maximum(&self) -> u64 {
        if self.count == 0 { 0 } else { self.max }
    }

    pub fn average(&self) -> u64 {
        self.sum.checked_div(self.count).unwrap_or(0)
    }

    /// The value `p` (0 to 1) of the values are at or below, as the bound of
    /// its bucket (never past the largest value seen).
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper(i).clamp(self.minimum(), self.maximum());
            }
        }
        self.maximum()
    }

    /// How many values are at most `2^exp`, for `exp` in `0..=MAX_EXP`.
    pub fn at_most_power_of_two(&self, exp: u32) -> u64 {
        let end = index(1u64 << exp) + 1;
        self.buckets.iter().take(end).sum()
    }

    /// The exponents Prometheus buckets are given at: `2^0 ..= 2^MAX_EXP`.
    pub fn exponents() -> std::ops::RangeInclusive<u32> {
        0..=MAX_EXP
    }

    /// What was recorded after `earlier`. Its extremes are those of the
    /// buckets that moved (the exact ones are not known for a window).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        if earlier.count == 0 {
            return self.clone();
        }
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        let count = buckets.iter().sum();
        let first = buckets.iter().position(|&n| n > 0);
        let last = buckets.iter().rposition(|&n| n > 0);
        Snapshot {
            count,
            sum: self.sum.saturating_sub(earlier.sum),
            min: first.map_or(0, |i| (lowest(i) + 1).max(self.min)),
            max: last.map_or(0, |i| upper(i).min(self.max)),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_values_and_bound_them_within_a_fifth() {
        let mut previous = 0;
        for v in 1..100_000u64 {
            let i = index(v);
            assert!(i >= previous, "buckets are in order at {v}");
            previous = i;
            assert!(lowest(i) < v && v <= upper(i), "{v} in bucket {i}");
            assert!(
                upper(i) as f64 <= v as f64 * 1.25 + 1.0,
                "{v}: bound {}",
                upper(i)
            );
        }
        assert_eq!(index(0), 0);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        for exp in Snapshot::exponents() {
            assert_eq!(
                upper(index(1u64 << exp)),
                1u64 << exp,
                "2^{exp} ends a bucket"
            );
        }
    }

    #[test]
    fn percentiles_counts_and_windows() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().percentile(0.5), 0);
        for v in 1..=100 {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(
            (s.count, s.sum, s.minimum(), s.maximum()),
            (100, 5050, 1, 100)
        );
        assert_eq!(s.average(), 50);
        let p50 = s.percentile(0.5);
        assert!((50..=62).contains(&p50), "p50 {p50}");
        assert_eq!(s.percentile(0.9999), 100);
        assert_eq!(s.at_most_power_of_two(6), 64);
        assert_eq!(s.at_most_power_of_two(7), 100);
        h.record(1000);
        let w = h.snapshot().since(&s);
        assert_eq!((w.count, w.sum), (1, 1000));
        assert!(w.minimum() <= 1000 && w.maximum() == 1000);
        assert_eq!(w.percentile(0.5), 1000);
    }
}
