//! Metrics in the Prometheus text exposition format (version 0.0.4): a fixed-bucket
//! [`Histogram`] that the code measuring something keeps as a plain field (no atomics, no
//! registry: each figure lives with the thread that changes it), and an [`Exposition`] writer
//! that turns counters, gauges and histograms into text once per scrape, with the `# HELP` and
//! `# TYPE` lines every family needs. Must not do I/O or keep global state: the event loop
//! gathers the figures from their owners (host, loop, syncer) into one `Exposition` per scrape
//! and serves the text (`event_loop/http.rs`).
//!
//! Naming follows Prometheus conventions, which `promtool check metrics` enforces in the tests:
//! every name starts with `zatt_`, is in base units (`_seconds`, `_bytes`), and counters end in
//! `_total`. Histograms are exposed as `NAME_bucket{le="..."}` (cumulative), `NAME_sum` and
//! `NAME_count`.

use std::fmt::Write as _;

/// Most buckets a histogram may have (the `+Inf` bucket not counted).
pub const MAX_BUCKETS: usize = 23;

/// Upper bounds, in microseconds, of request and fsync latency buckets: 50 µs to 10 s.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds, in microseconds, of buckets for long operations (snapshots): 1 ms to 5 min.
pub const LONG_BOUNDS_US: &[u64] = &[
    1_000,
    10_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
];

/// Durations observed into fixed buckets, in microseconds; exposed in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative); the last used slot is `+Inf`.
    counts: [u64; MAX_BUCKETS + 1],
    sum_us: u64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending, at most `MAX_BUCKETS`).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() <= MAX_BUCKETS, "too many histogram buckets");
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must ascend"
        );
        Histogram {
            bounds,
            counts: [0; MAX_BUCKETS + 1],
            sum_us: 0,
            count: 0,
        }
    }

    /// A histogram of request or fsync latencies.
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_US)
    }

    /// Records one observation of `us` microseconds.
    pub fn observe_us(&mut self, us: u64) {
        let i = self.bounds.partition_point(|b| *b < us);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the observations, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// `(upper bound in µs, cumulative count)` per bucket, `+Inf` (None) last.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let mut acc = 0u64;
        (0..=self.bounds.len()).map(move |i| {
            acc += self.counts[i];
            (self.bounds.get(i).copied(), acc)
        })
    }
}

/// Builds the text of one scrape. Families are written whole: `family` writes the HELP and
/// TYPE lines, then `sample`/`histogram_samples` the family's series.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

/// Label pairs of one series.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Starts a family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One series of the current family.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        write_value(&mut self.out, value);
        self.out.push('\n');
    }

    /// A family of one counter series without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }

    /// A family of one gauge series without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// The series of one histogram of the current family (its `_bucket`s, `_sum` and
    /// `_count`), in seconds.
    pub fn histogram_samples(&mut self, name: &str, labels: Labels<'_>, h: &Histogram) {
        for (bound, n) in h.cumulative() {
            self.out.push_str(name);
            self.out.push_str("_bucket");
            let le = match bound {
                Some(us) => seconds_text(us),
                None => "+Inf".to_string(),
            };
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {n}");
        }
        self.out.push_str(name);
        self.out.push_str("_sum");
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        write_value(&mut self.out, h.sum_us() as f64 / 1e6);
        self.out.push('\n');
        self.out.push_str(name);
        self.out.push_str("_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", h.count());
    }

    /// A family of one histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        self.histogram_samples(name, &[], h);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Microseconds as a seconds literal without float noise (`250` → `0.00025`).
fn seconds_text(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_labels(out: &mut String, labels: Labels<'_>, le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        // Goal: each observation lands in the first bucket whose bound is at least it, the
        // exposed buckets are cumulative, +Inf equals the count, and the sum is in seconds.
        let mut h = Histogram::latency();
        for us in [10, 50, 51, 2_000, 20_000_000] {
            h.observe_us(us);
        }
        let c: Vec<(Option<u64>, u64)> = h.cumulative().collect();
        assert_eq!(c[0], (Some(50), 2)); // 10 and 50 (le is inclusive)
        assert_eq!(c[1], (Some(100), 3));
        assert_eq!(c[5], (Some(2_500), 4));
        assert_eq!(*c.last().unwrap(), (None, 5));
        let mut e = Exposition::new();
        e.histogram("zatt_x_seconds", "X.", &h);
        let text = e.finish();
        assert!(
            text.contains("zatt_x_seconds_bucket{le=\"0.00005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("zatt_x_seconds_bucket{le=\"2.5\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("zatt_x_seconds_bucket{le=\"+Inf\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("zatt_x_seconds_count 5\n"), "{text}");
        assert!(text.contains("zatt_x_seconds_sum 20.002111\n"), "{text}");
    }

    #[test]
    fn labels_are_escaped() {
        let mut e = Exposition::new();
        e.family("zatt_y_total", "counter", "Y with a \\ and\na newline.");
        e.sample("zatt_y_total", &[("why", "a \"q\" \\ \n")], 3.0);
        let text = e.finish();
        assert!(
            text.contains(r#"zatt_y_total{why="a \"q\" \\ \n"} 3"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP zatt_y_total Y with a \\\\ and\\na newline.\n"),
            "{text}"
        );
    }
}
