//! A latency histogram with logarithmic buckets.
//!
//! Values are nanoseconds. Every power of two is split into [`SUB_BUCKETS`] equal sub-buckets
//! (the HdrHistogram idea), so a recorded value is known to within 1/32 ≈ 3.1% of itself, over
//! the whole `u64` range, in a fixed 15 KiB of counters. Percentiles report the upper bound of the
//! bucket that holds the requested rank, clamped to the exact minimum and maximum, so they never
//! understate a latency and never exceed the true maximum. Histograms merge by adding counters,
//! which is how the per-client histograms of a run are combined without locking.

use std::time::Duration;

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 5;
/// Sub-buckets per power of two: the relative resolution is `1 / SUB_BUCKETS`.
pub const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Number of buckets needed to cover every `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB_BUCKETS as usize;

/// Latency histogram over nanosecond values; see the module documentation.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// One printed row of [`Histogram::log2_buckets`]: values in `[lo, hi)` nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Inclusive lower bound, nanoseconds.
    pub lo: u64,
    /// Exclusive upper bound, nanoseconds.
    pub hi: u64,
    /// Values recorded in the range.
    pub count: u64,
}

/// Index of the bucket that holds `v`.
fn index_of(v: u64) -> usize {
    if v < SUB_BUCKETS {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // position of the top bit, >= SUB_BITS
    let mantissa = (v >> (e - SUB_BITS)) & (SUB_BUCKETS - 1);
    ((e - SUB_BITS + 1) as u64 * SUB_BUCKETS + mantissa) as usize
}

/// Inclusive `(lowest, highest)` value held by bucket `i`.
fn bounds_of(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB_BUCKETS {
        return (i, i);
    }
    let e = i / SUB_BUCKETS + SUB_BITS as u64 - 1;
    let mantissa = i % SUB_BUCKETS;
    let shift = e - SUB_BITS as u64;
    let lo = (SUB_BUCKETS + mantissa) << shift;
    let width = 1u64 << shift;
    (lo, lo + (width - 1))
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Records one value in nanoseconds.
    pub fn record_ns(&mut self, v: u64) {
        self.counts[index_of(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Records one duration (saturating at `u64::MAX` nanoseconds, ~584 years).
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += *b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest recorded value (exact); zero when empty.
    pub fn min(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.min)
        }
    }

    /// Largest recorded value (exact); zero when empty.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    /// Arithmetic mean (exact); zero when empty.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum / self.count as u128) as u64)
    }

    /// The value at quantile `q` (0.0..=1.0): the upper bound of the bucket holding the
    /// `ceil(q × count)`-th smallest value, clamped to `[min, max]`. Zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (_, hi) = bounds_of(i);
                return Duration::from_nanos(hi.clamp(self.min, self.max));
            }
        }
        Duration::from_nanos(self.max)
    }

    /// The counts regrouped by powers of two (`[2^k, 2^(k+1))` ns) for printing, with every value
    /// below 1,024 ns in one first row `[0, 1024)`; see [`Histogram::log2_buckets_from`].
    pub fn log2_buckets(&self) -> Vec<Bucket> {
        self.log2_buckets_from(1024)
    }

    /// The counts regrouped by powers of two (`[2^k, 2^(k+1))` ns), from the lowest non-empty
    /// range to the highest; empty ranges in between are kept so the shape is visible. Values
    /// below `floor` (rounded up to a power of two, at least 2) share one first row `[0, floor)`.
    pub fn log2_buckets_from(&self, floor: u64) -> Vec<Bucket> {
        let floor = floor.max(2).next_power_of_two();
        let mut out: Vec<Bucket> = Vec::new();
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let (lo, _) = bounds_of(i);
            let (blo, bhi) = if lo < floor {
                (0, floor)
            } else {
                let k = 63 - lo.leading_zeros();
                (1u64 << k, 1u64.checked_shl(k + 1).unwrap_or(u64::MAX))
            };
            match out.last_mut() {
                Some(last) if last.lo == blo => last.count += c,
                _ => {
                    // Fill the empty octaves between the previous row and this one.
                    if let Some(last) = out.last() {
                        let mut lo = last.hi;
                        while lo < blo {
                            let hi = lo.saturating_mul(2);
                            out.push(Bucket { lo, hi, count: 0 });
                            lo = hi;
                        }
                    }
                    out.push(Bucket {
                        lo: blo,
                        hi: bhi,
                        count: c,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bounds_agree_everywhere() {
        // Every bucket's bounds map back to it, and buckets tile the number line.
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds_of(i);
            assert_eq!(lo, next, "bucket {i} starts where the previous ended");
            assert_eq!(index_of(lo), i);
            assert_eq!(index_of(hi), i);
            assert!(hi >= lo);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_bounded() {
        for v in [33u64, 100, 1_000, 12_345, 999_999, 1 << 40, u64::MAX / 3] {
            let (lo, hi) = bounds_of(index_of(v));
            assert!(lo <= v && v <= hi);
            assert!(
                (hi - lo) as f64 <= v as f64 / SUB_BUCKETS as f64,
                "bucket of {v} is too wide: {lo}..={hi}"
            );
        }
    }

    #[test]
    fn empty_histogram_is_all_zero() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        assert_eq!(h.min(), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
        assert!(h.log2_buckets().is_empty());
    }

    #[test]
    fn single_value_is_exact_at_every_quantile() {
        let mut h = Histogram::new();
        h.record(Duration::from_micros(1234));
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(h.quantile(q), Duration::from_micros(1234));
        }
    }

    #[test]
    fn percentiles_of_uniform_values() {
        // 1..=10_000 µs: the p-th percentile is p% of 10 ms, within the 1/32 resolution.
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want_us) in [
            (0.5, 5_000.0),
            (0.9, 9_000.0),
            (0.99, 9_900.0),
            (0.999, 9_990.0),
        ] {
            let got = h.quantile(q).as_nanos() as f64 / 1_000.0;
            assert!(
                got >= want_us && got <= want_us * (1.0 + 1.0 / SUB_BUCKETS as f64),
                "q={q}: got {got} µs, want ≈{want_us} µs"
            );
        }
        assert_eq!(h.quantile(1.0), Duration::from_millis(10));
        assert_eq!(h.max(), Duration::from_millis(10));
        assert_eq!(h.min(), Duration::from_micros(1));
        assert_eq!(h.mean(), Duration::from_nanos(5_000_500));
    }

    #[test]
    fn tail_percentiles_see_rare_outliers() {
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(Duration::from_micros(100));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(50));
        }
        assert!(h.quantile(0.5) >= Duration::from_micros(100));
        assert!(h.quantile(0.5) < Duration::from_micros(104));
        assert!(
            h.quantile(0.99) < Duration::from_micros(104),
            "rank 990 is still fast"
        );
        assert_eq!(h.quantile(0.999), Duration::from_millis(50));
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 0..5_000u64 {
            let ns = v * v * 37 % 9_999_991;
            if v % 3 == 0 {
                a.record_ns(ns)
            } else {
                b.record_ns(ns)
            }
            all.record_ns(ns);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        assert_eq!(a.min(), all.min());
        assert_eq!(a.max(), all.max());
        assert_eq!(a.mean(), all.mean());
        for q in [0.1, 0.5, 0.9, 0.99, 0.999] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
        // Merging an empty histogram changes nothing.
        a.merge(&Histogram::new());
        assert_eq!(a.min(), all.min());
        assert_eq!(a.count(), all.count());
    }

    #[test]
    fn log2_buckets_cover_all_counts_and_fill_gaps() {
        let mut h = Histogram::new();
        h.record_ns(1_000); // [512, 1024)
        h.record_ns(1_023);
        h.record_ns(70_000); // [65536, 131072)
        let rows = h.log2_buckets_from(2);
        assert_eq!(rows.first().unwrap().lo, 512);
        assert_eq!(rows.first().unwrap().count, 2);
        assert_eq!(rows.last().unwrap().lo, 65_536);
        assert_eq!(rows.last().unwrap().count, 1);
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 3);
        for w in rows.windows(2) {
            assert_eq!(w[0].hi, w[1].lo, "rows are contiguous");
            assert_eq!(w[1].hi, w[1].lo * 2);
        }
        assert_eq!(rows.len(), 8); // 2^9 .. 2^16
    }

    #[test]
    fn zero_and_tiny_values() {
        let mut h = Histogram::new();
        h.record_ns(0);
        h.record_ns(1);
        h.record_ns(31);
        assert_eq!(h.quantile(0.0), Duration::ZERO);
        assert_eq!(h.quantile(1.0), Duration::from_nanos(31));
        let rows = h.log2_buckets_from(2);
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 3);
        assert_eq!((rows[0].lo, rows[0].hi, rows[0].count), (0, 2, 2));
        assert_eq!(rows.len(), 5); // [0,2) [2,4) [4,8) [8,16) [16,32)
                                   // With the default floor, everything under 1,024 ns is one row.
        h.record_ns(5_000);
        let rows = h.log2_buckets();
        assert_eq!((rows[0].lo, rows[0].hi, rows[0].count), (0, 1024, 3));
        assert_eq!(rows.last().unwrap().lo, 4096);
        assert_eq!(rows.len(), 4); // [0,1024) [1024,2048) [2048,4096) [4096,8192)
    }
}
