//! A fixed-size latency histogram: record in O(1) without allocating, merge, read percentiles by
//! nearest rank, and cross machines as an exact bucket list (`to_json` / `from_buckets`), so that
//! runs on several load-generating machines merge into the histogram one machine would have
//! recorded for all their samples. Owns no clock and no I/O; parsing JSON is `merge.rs`'s.
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

/// The name of this bucket layout in the exchanged form. A decoder refuses any other name, so a
/// future layout cannot be merged with this one by mistake.
pub const ENCODING: &str = "log-linear-7bit-ns";

#[derive(Clone, PartialEq, Eq)]
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

    /// The whole histogram as one JSON object: the layout's name, the exact count, min, max and
    /// sum, and every non-empty bucket as `[lowest value in ns, count]`. `from_buckets` rebuilds
    /// exactly this histogram from those numbers.
    pub fn to_json(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!(
            "{{\"encoding\":\"{ENCODING}\",\"count\":{},\"min_ns\":{},\"max_ns\":{},\"sum_ns\":{},\"buckets\":[",
            self.total,
            self.min_ns(),
            self.max_ns,
            self.sum_ns
        );
        for (i, (floor, c)) in self.buckets().enumerate() {
            let _ = write!(s, "{}[{floor},{c}]", if i > 0 { "," } else { "" });
        }
        s.push_str("]}");
        s
    }

    /// Rebuilds a histogram from the parts `to_json` writes, refusing (with the reason) anything
    /// this layout could not have produced: a bucket that is not one of ours, buckets out of
    /// order or repeated, empty buckets, counts that do not add up to `count`, a minimum or
    /// maximum outside its bucket, a sum no set of such samples could have.
    pub fn from_buckets(
        count: u64,
        min_ns: u64,
        max_ns: u64,
        sum_ns: u128,
        buckets: &[(u64, u64)],
    ) -> Result<Histogram, String> {
        if buckets.len() > BUCKETS {
            return Err(format!(
                "{} buckets, but the layout has only {BUCKETS}",
                buckets.len()
            ));
        }
        let mut h = Histogram::new();
        let mut prev: Option<usize> = None;
        let mut total = 0u64;
        for &(floor, c) in buckets {
            let b = bucket_of(floor.min(MAX_NS));
            if floor > MAX_NS || bucket_floor(b) != floor {
                return Err(format!("{floor} ns is not the lowest value of a bucket"));
            }
            if prev.is_some_and(|p| p >= b) {
                return Err(format!(
                    "bucket {floor} ns is out of order or repeated (buckets must increase)"
                ));
            }
            if c == 0 {
                return Err(format!("bucket {floor} ns has a count of 0"));
            }
            total = total
                .checked_add(c)
                .ok_or("the bucket counts overflow a 64-bit count")?;
            h.counts[b] = c;
            prev = Some(b);
        }
        if total != count {
            return Err(format!(
                "the buckets hold {total} samples but count says {count}"
            ));
        }
        if count == 0 {
            if min_ns != 0 || max_ns != 0 || sum_ns != 0 {
                return Err("an empty histogram with a nonzero min, max or sum".into());
            }
            return Ok(h);
        }
        if min_ns > max_ns {
            return Err(format!("min_ns {min_ns} is above max_ns {max_ns}"));
        }
        let first = bucket_of(buckets[0].0);
        let last = bucket_of(buckets[buckets.len() - 1].0);
        if bucket_of(min_ns.min(MAX_NS)) != first {
            return Err(format!(
                "min_ns {min_ns} is not in the lowest bucket ({} ns)",
                buckets[0].0
            ));
        }
        if bucket_of(max_ns.min(MAX_NS)) != last {
            return Err(format!(
                "max_ns {max_ns} is not in the highest bucket ({} ns)",
                buckets[buckets.len() - 1].0
            ));
        }
        let lo = min_ns as u128 * count as u128;
        let hi = max_ns as u128 * count as u128;
        if sum_ns < lo || sum_ns > hi {
            return Err(format!(
                "sum_ns {sum_ns} cannot be the sum of {count} samples between {min_ns} and {max_ns} ns"
            ));
        }
        h.total = count;
        h.min_ns = min_ns;
        h.max_ns = max_ns;
        h.sum_ns = sum_ns;
        Ok(h)
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

    /// count, min, max, sum and buckets: what `from_buckets` takes.
    type Parts = (u64, u64, u64, u128, Vec<(u64, u64)>);

    fn parts(h: &Histogram) -> Parts {
        (
            h.count(),
            h.min_ns(),
            h.max_ns(),
            h.sum_ns,
            h.buckets().collect(),
        )
    }

    // Goal: the exchanged form rebuilds exactly the histogram it came from, including values
    // past MAX_NS (clamped into the last bucket, min and max exact) and the empty histogram.
    #[test]
    fn buckets_round_trip_exactly() {
        let mut h = Histogram::new();
        for v in [0, 1, 255, 256, 1000, 123_456_789, MAX_NS, MAX_NS + 5] {
            h.record(v);
        }
        let (n, lo, hi, sum, b) = parts(&h);
        assert_eq!(Histogram::from_buckets(n, lo, hi, sum, &b).unwrap(), h);
        let empty = Histogram::new();
        let (n, lo, hi, sum, b) = parts(&empty);
        assert_eq!(Histogram::from_buckets(n, lo, hi, sum, &b).unwrap(), empty);
    }

    // Goal: every kind of bucket list this layout cannot produce is refused, not trusted.
    #[test]
    fn impossible_bucket_lists_are_refused() {
        let mut h = Histogram::new();
        for v in [300, 5000, 70_000] {
            h.record(v);
        }
        let (n, lo, hi, sum, b) = parts(&h);
        assert!(Histogram::from_buckets(n, lo, hi, sum, &b).is_ok());
        let bad: Vec<Parts> = vec![
            (n, lo, hi, sum, vec![(301, 1), (b[1].0, 1), (b[2].0, 1)]), // not a bucket floor
            (n, lo, hi, sum, vec![b[1], b[0], b[2]]),                   // out of order
            (n, lo, hi, sum, vec![b[0], b[0], b[2]]),                   // repeated
            (n, lo, hi, sum, vec![b[0], (b[1].0, 0), b[1], b[2]]),      // empty bucket
            (n + 1, lo, hi, sum, b.clone()),                            // counts do not add up
            (n, 1, hi, sum, b.clone()),                                 // min outside its bucket
            (n, lo, 1 << 30, sum, b.clone()),                           // max outside its bucket
            (n, lo, hi, 1, b.clone()),                                  // impossible sum
            (n, hi, lo, sum, b.clone()),                                // min above max
            (0, 0, 0, 5, vec![]),                                       // empty with a sum
            (n, lo, hi, sum, vec![(MAX_NS + 1, 3)]),                    // past the last bucket
            (u64::MAX, lo, hi, sum, vec![(300, u64::MAX), (5000, 1)]),  // count overflow
        ];
        for (n, lo, hi, sum, b) in bad {
            assert!(
                Histogram::from_buckets(n, lo, hi, sum, &b).is_err(),
                "accepted {n} {lo} {hi} {sum} {b:?}"
            );
        }
        let too_many: Vec<(u64, u64)> = (0..=BUCKETS as u64).map(|v| (v, 1)).collect();
        assert!(Histogram::from_buckets(0, 0, 0, 0, &too_many).is_err());
    }
}
