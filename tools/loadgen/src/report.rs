//! What a run reports: the per-second line on stderr and the final summary, as text for a person
//! or as one JSON object for scripts (`perf/bench.sh` reads it). Owns formatting only; the numbers
//! come from the driver.

use crate::hist::Histogram;
use std::fmt::Write as _;

/// Errors by kind, in first-seen order. Kinds are static names so counting one never allocates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub kinds: Vec<(&'static str, u64)>,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c += n,
            None => self.kinds.push((kind, n)),
        }
    }

    pub fn total(&self) -> u64 {
        self.kinds.iter().map(|(_, c)| c).sum()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (k, c) in &other.kinds {
            self.add(k, *c);
        }
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, c)| *c)
    }
}

/// The final figures of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Successful requests completed during the measured period.
    pub ops: u64,
    pub errors: ErrorCounts,
    /// Gets answered "no such key" (a success, counted apart so a reader knows the data was absent).
    pub not_found: u64,
    /// Length of the measured period.
    pub seconds: f64,
    /// Latency of successful requests, from the intended send time in open loop.
    pub latency: Histogram,
    /// CPU seconds the load generator used during the measured period.
    pub cpu_seconds: f64,
    /// A short description of the run (mode, op, clients...), echoed in both formats.
    pub mode: String,
    /// Open loop only: the longest a request waited past its scheduled send time because every
    /// window was full. Large values mean --clients × --pipeline is too small for the rate (or the
    /// cluster fell behind); the wait is inside the latencies either way.
    pub open_loop_max_send_lag_ms: Option<f64>,
    /// `--op mix` only: the successful gets' and puts' latencies apart.
    pub by_op: Option<Box<[(&'static str, Histogram); 2]>>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Summary {
    pub fn req_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> String {
        let h = &self.latency;
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"mode\":{},\"ops\":{},\"errors\":{},\"errors_by_kind\":{{",
            json_str(&self.mode),
            self.ops,
            self.errors.total()
        );
        for (i, (k, c)) in self.errors.kinds.iter().enumerate() {
            let _ = write!(s, "{}{}:{}", if i > 0 { "," } else { "" }, json_str(k), c);
        }
        let _ = write!(
            s,
            "}},\"not_found\":{},\"seconds\":{:.3},\"req_per_s\":{:.1},\"min_us\":{:.1},\"p50_us\":{:.1},\
             \"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"mean_us\":{:.1},\
             \"loadgen_cpu_seconds\":{:.3},\"loadgen_cpu_per_s\":{:.3}",
            self.not_found,
            self.seconds,
            self.req_per_s(),
            us(h.min_ns()),
            us(h.percentile_ns(50.0)),
            us(h.percentile_ns(90.0)),
            us(h.percentile_ns(99.0)),
            us(h.percentile_ns(99.9)),
            us(h.max_ns()),
            us(h.mean_ns()),
            self.cpu_seconds,
            if self.seconds > 0.0 { self.cpu_seconds / self.seconds } else { 0.0 },
        );
        if let Some(lag) = self.open_loop_max_send_lag_ms {
            let _ = write!(s, ",\"open_loop_max_send_lag_ms\":{lag:.3}");
        }
        for (name, h) in self.by_op.iter().flat_map(|b| b.iter()) {
            let _ = write!(
                s,
                ",\"{name}\":{{\"ops\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1}}}",
                h.count(),
                us(h.percentile_ns(50.0)),
                us(h.percentile_ns(90.0)),
                us(h.percentile_ns(99.0)),
                us(h.percentile_ns(99.9)),
                us(h.max_ns())
            );
        }
        s.push('}');
        s
    }

    pub fn to_text(&self) -> String {
        let h = &self.latency;
        let mut s = String::new();
        let _ = writeln!(s, "run:         {}", self.mode);
        let _ = writeln!(s, "ops:         {} in {:.3} s", self.ops, self.seconds);
        let _ = writeln!(s, "throughput:  {:.0} req/s", self.req_per_s());
        let _ = write!(s, "errors:      {}", self.errors.total());
        if !self.errors.kinds.is_empty() {
            let parts: Vec<String> = self
                .errors
                .kinds
                .iter()
                .map(|(k, c)| format!("{k}={c}"))
                .collect();
            let _ = write!(s, " ({})", parts.join(", "));
        }
        let _ = writeln!(s);
        if self.not_found > 0 {
            let _ = writeln!(s, "not found:   {}", self.not_found);
        }
        let _ = writeln!(
            s,
            "latency µs:  min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            us(h.min_ns()),
            us(h.percentile_ns(50.0)),
            us(h.percentile_ns(90.0)),
            us(h.percentile_ns(99.0)),
            us(h.percentile_ns(99.9)),
            us(h.max_ns())
        );
        for (name, h) in self.by_op.iter().flat_map(|b| b.iter()) {
            let _ = writeln!(
                s,
                "  {name}s µs:    n {}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                h.count(),
                us(h.percentile_ns(50.0)),
                us(h.percentile_ns(90.0)),
                us(h.percentile_ns(99.0)),
                us(h.percentile_ns(99.9)),
                us(h.max_ns())
            );
        }
        if let Some(lag) = self.open_loop_max_send_lag_ms {
            let _ = writeln!(
                s,
                "send lag:    at most {lag:.1} ms behind the timetable{}",
                if lag > 1.0 {
                    " (windows full: raise --clients or --pipeline, or the cluster is behind)"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(
            s,
            "loadgen cpu: {:.3} s ({:.0} % of one core)",
            self.cpu_seconds,
            if self.seconds > 0.0 {
                100.0 * self.cpu_seconds / self.seconds
            } else {
                0.0
            }
        );
        s
    }
}

/// One line per second on stderr while the run goes.
pub fn live_line(
    second: u64,
    warming: bool,
    ops: u64,
    errors: u64,
    interval: &Histogram,
) -> String {
    format!(
        "[{:>4}s]{} {:>9} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  errors {}",
        second,
        if warming { " warmup" } else { "" },
        ops,
        us(interval.percentile_ns(50.0)),
        us(interval.percentile_ns(99.0)),
        errors
    )
}

pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
