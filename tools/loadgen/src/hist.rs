//! A fixed-size latency histogram: record in O(1) without allocating, merge, and read
//! percentiles by nearest rank. Owns no clock and no I/O.
//!
//! Buckets are log-linear like an HDR histogram with 7 bits of sub-bucket precision: values below
//! 256 ns are exact, larger values fall in buckets no wider than 1/128 of their lower bound, so a
//! reported percentile is within 0.8 % below the true sample. Values above `MAX_NS` (about 18
//! minutes) are clamped; `min` and `max` are kept exactly.

const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// The largest value recorded faithfully; larger ones count as this.
pub const MAX_NS: u64 = 1 << 40;
const SHIFTS: usize = (40 - SUB_BITS) as usize;
/// Buckets: 2*SUB exact ones, then SUB for each further power of two, then `MAX_NS` itself.
const BUCKETS: usize = (SHIFTS + 1) * SUB as usize + 1;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min_ns: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Histogram(n={}, min={}ns, max={}ns)",
            self.total, self.min_ns, self.max_ns
        )
    }
}

fn bucket_of(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The lowest value that falls in bucket `b`.
fn bucket_floor(b: usize) -> u64 {
    let b = b as u64;
    if b < 2 * SUB {
        return b;
    }
    let shift = b / SUB - 1;
    (b % SUB + SUB) << shift
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0u64; BUCKETS].into_boxed_slice(),
            total: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        let v = ns.min(MAX_NS);
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += ns as u128;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += *b;
        }
        self.total += other.total;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.min_ns = u64::MAX;
        self.max_ns = 0;
        self.sum_ns = 0;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest sample, or 0 when empty.
    pub fn min_ns(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min_ns
        }
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub fn mean_ns(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum_ns / self.total as u128) as u64
        }
    }

    /// The nearest-rank percentile: the smallest recorded value (to bucket precision) such that
    /// at least `p` percent of the samples are at or below it. 0 when empty. The answer never
    /// leaves [min, max], so p0 is the minimum and p100 the maximum exactly.
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let p = p.clamp(0.0, 100.0);
        // In integers (p to a thousandth of a percent), so that p99.9 of 1000 samples is rank
        // 999, not the 1000 that 0.999 * 1000.0 rounds up to in floating point.
        let p_milli = (p * 1000.0).round() as u128;
        let rank = ((p_milli * self.total as u128).div_ceil(100_000) as u64).max(1);
        if rank >= self.total {
            return self.max_ns;
        }
        let mut seen = 0u64;
        for (b, c) in self.counts.iter().enumerate() {
            seen += *c;
            if seen >= rank {
                return bucket_floor(b).clamp(self.min_ns, self.max_ns);
            }
        }
        self.max_ns
    }

    /// Every non-empty bucket as (lowest value, count), in increasing order; for plots.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, c)| (bucket_floor(b), *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: bucket_floor inverts bucket_of at every bucket boundary and buckets never overlap.
    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut prev = 0;
        for b in 1..BUCKETS {
            let f = bucket_floor(b);
            assert!(f > prev, "bucket {b} floor {f} not above {prev}");
            assert_eq!(bucket_of(f), b);
            assert_eq!(bucket_of(f - 1), b - 1);
            prev = f;
        }
        assert_eq!(bucket_of(MAX_NS), BUCKETS - 1);
    }
}
