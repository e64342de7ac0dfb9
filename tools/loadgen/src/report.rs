//! What a run reports: the per-second line on stderr and the final summary, as text for a person
//! or as one JSON object for scripts (`perf/bench.sh` reads it). Owns formatting only; the numbers
//! come from the driver.

use crate::hist::Histogram;
use std::borrow::Cow;
use std::fmt::Write as _;

/// Errors by kind, in first-seen order. The load path counts static names, so counting one never
/// allocates; kinds read from another run's file (`loadgen merge`) are owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub kinds: Vec<(Cow<'static, str>, u64)>,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: &'static str, n: u64) {
        self.add_named(Cow::Borrowed(kind), n);
    }

    pub fn add_named(&mut self, kind: Cow<'static, str>, n: u64) {
        if n == 0 {
            return;
        }
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c = c.saturating_add(n),
            None => self.kinds.push((kind, n)),
        }
    }

    pub fn total(&self) -> u64 {
        self.kinds.iter().map(|(_, c)| c).sum()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (k, c) in &other.kinds {
            self.add_named(k.clone(), *c);
        }
    }

    pub fn get(&self, kind: &str) -> u64 {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, c)| *c)
    }
}

/// What a run asked of the cluster, per request: runs merge only when these are all equal, since
/// percentiles of different workloads mixed into one histogram describe neither.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// "put", "get" or "mix".
    pub op: String,
    /// Fraction of gets (1 for get, 0 for put).
    pub read_ratio: f64,
    /// "linearizable" or "stale".
    pub consistency: String,
    pub key_size: u64,
    pub val_size: u64,
    pub key_space: u64,
    /// Requests each client keeps in flight.
    pub pipeline: u64,
    /// Open loop (latency from the intended send time) or closed loop.
    pub open_loop: bool,
    pub tls: bool,
}

impl Settings {
    /// The first field that differs, as "name: A vs B", or None when they match.
    pub fn difference(&self, other: &Settings) -> Option<String> {
        let pairs: [(&str, String, String); 9] = [
            ("op", self.op.clone(), other.op.clone()),
            (
                "read_ratio",
                self.read_ratio.to_string(),
                other.read_ratio.to_string(),
            ),
            (
                "consistency",
                self.consistency.clone(),
                other.consistency.clone(),
            ),
            (
                "key_size",
                self.key_size.to_string(),
                other.key_size.to_string(),
            ),
            (
                "val_size",
                self.val_size.to_string(),
                other.val_size.to_string(),
            ),
            (
                "key_space",
                self.key_space.to_string(),
                other.key_space.to_string(),
            ),
            (
                "pipeline",
                self.pipeline.to_string(),
                other.pipeline.to_string(),
            ),
            (
                "open_loop",
                self.open_loop.to_string(),
                other.open_loop.to_string(),
            ),
            ("tls", self.tls.to_string(), other.tls.to_string()),
        ];
        pairs
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(name, a, b)| format!("{name}: {a} vs {b}"))
    }
}

/// How much load a run offered; merged runs add up.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    pub clients: u64,
    pub conns: u64,
    pub threads: u64,
    /// Open loop: the scheduled requests per second.
    pub rate: Option<f64>,
}

/// The final figures of a run, or of several runs merged (`loadgen merge`).
#[derive(Debug, Clone)]
pub struct Summary {
    /// Successful requests completed during the measured period.
    pub ops: u64,
    pub errors: ErrorCounts,
    /// Gets answered "no such key" (a success, counted apart so a reader knows the data was absent).
    pub not_found: u64,
    /// Length of the measured period (merged: from the earliest run's start to the latest's end).
    pub seconds: f64,
    /// Latency of successful requests, from the intended send time in open loop.
    pub latency: Histogram,
    /// CPU seconds the load generator used during the measured period (merged: all of them).
    pub cpu_seconds: f64,
    pub settings: Settings,
    pub load: Load,
    /// How many load generator runs these figures cover.
    pub runs: u64,
    /// The measured period on the wall clock, ns since the Unix epoch: [from, to].
    pub window_unix_ns: (u64, u64),
    /// Merged only: how long every run was measuring at once, ns (0 when some never overlapped).
    pub overlap_ns: Option<u64>,
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

/// The wall-clock time as ns since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One line naming what was run.
pub fn describe(s: &Settings, l: &Load) -> String {
    let op = match s.op.as_str() {
        "mix" => format!("mix {:.0}% get", s.read_ratio * 100.0),
        o => o.to_string(),
    };
    let lp = match l.rate {
        Some(r) => format!("open loop {r} req/s"),
        None => "closed loop".into(),
    };
    let reads = if s.op == "put" {
        String::new()
    } else {
        format!(" ({} reads)", s.consistency)
    };
    format!(
        "{lp}, {op}{reads}, {} clients over {} conns, pipeline {}, key {} B, value {} B, {} keys, {} thread(s){}",
        l.clients,
        l.conns,
        s.pipeline,
        s.key_size,
        s.val_size,
        s.key_space,
        l.threads,
        if s.tls { ", TLS" } else { "" }
    )
}

impl Summary {
    pub fn req_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn mode(&self) -> String {
        let d = describe(&self.settings, &self.load);
        if self.runs > 1 {
            format!("{} runs merged: {d}", self.runs)
        } else {
            d
        }
    }

    fn cpu_share(&self) -> f64 {
        if self.seconds > 0.0 {
            self.cpu_seconds / self.seconds
        } else {
            0.0
        }
    }

    /// Whether the load generator used nearly all the CPU its threads can use, so the figures may
    /// describe the load generator rather than the cluster.
    pub fn loadgen_saturated(&self) -> bool {
        self.load.threads > 0 && self.cpu_share() > 0.9 * self.load.threads as f64
    }

    /// One JSON object on one line. The fields before `get`/`put` are flat numbers that scripts
    /// read by name (`perf/lib.sh`'s `jnum` takes the first of a name); what `loadgen merge`
    /// needs besides them comes after.
    pub fn to_json(&self) -> String {
        let h = &self.latency;
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"mode\":{},\"ops\":{},\"errors\":{},\"errors_by_kind\":{{",
            json_str(&self.mode()),
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
            self.cpu_share(),
        );
        if let Some(lag) = self.open_loop_max_send_lag_ms {
            let _ = write!(s, ",\"open_loop_max_send_lag_ms\":{lag:.3}");
        }
        for (name, h) in self.by_op.iter().flat_map(|b| b.iter()) {
            let _ = write!(
                s,
                ",\"{name}\":{{\"ops\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"histogram\":{}}}",
                h.count(),
                us(h.percentile_ns(50.0)),
                us(h.percentile_ns(90.0)),
                us(h.percentile_ns(99.0)),
                us(h.percentile_ns(99.9)),
                us(h.max_ns()),
                h.to_json()
            );
        }
        let st = &self.settings;
        let _ = write!(
            s,
            ",\"loadgen_version\":{},\"runs\":{},\"measured_from_unix_ns\":{},\"measured_to_unix_ns\":{}",
            json_str(env!("CARGO_PKG_VERSION")),
            self.runs,
            self.window_unix_ns.0,
            self.window_unix_ns.1
        );
        if let Some(o) = self.overlap_ns {
            let _ = write!(s, ",\"overlap_seconds\":{:.3}", o as f64 / 1e9);
        }
        let _ = write!(
            s,
            ",\"settings\":{{\"op\":{},\"read_ratio\":{},\"consistency\":{},\"key_size\":{},\
             \"val_size\":{},\"key_space\":{},\"pipeline\":{},\"open_loop\":{},\"tls\":{}}}",
            json_str(&st.op),
            st.read_ratio,
            json_str(&st.consistency),
            st.key_size,
            st.val_size,
            st.key_space,
            st.pipeline,
            st.open_loop,
            st.tls
        );
        let _ = write!(
            s,
            ",\"load\":{{\"clients\":{},\"conns\":{},\"threads\":{},\"rate\":{}}}",
            self.load.clients,
            self.load.conns,
            self.load.threads,
            self.load.rate.map_or("null".to_string(), |r| r.to_string())
        );
        let _ = write!(s, ",\"histogram\":{}}}", h.to_json());
        s
    }

    pub fn to_text(&self) -> String {
        let h = &self.latency;
        let mut s = String::new();
        let _ = writeln!(s, "run:         {}", self.mode());
        let _ = writeln!(s, "ops:         {} in {:.3} s", self.ops, self.seconds);
        let _ = writeln!(s, "throughput:  {:.0} req/s", self.req_per_s());
        if let Some(o) = self.overlap_ns.filter(|_| self.runs > 1) {
            let _ = writeln!(
                s,
                "together:    all {} runs were measuring at once for {:.3} s of those {:.3} s",
                self.runs,
                o as f64 / 1e9,
                self.seconds
            );
        }
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
            let _ = write!(s, "not found:   {}", self.not_found);
            if self.not_found * 2 > self.ops {
                let _ = write!(
                    s,
                    " (most gets found no value, which is cheaper to serve: --preload writes every key first)"
                );
            }
            let _ = writeln!(s);
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
            "loadgen cpu: {:.3} s ({:.0} % of one core){}",
            self.cpu_seconds,
            100.0 * self.cpu_share(),
            if self.loadgen_saturated() {
                format!(
                    ": near the ceiling of its {} thread(s), so the load generator may be the limit \
                     (raise --threads, or run more of them: perf/multi.sh)",
                    self.load.threads
                )
            } else {
                String::new()
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
