//! `loadgen merge`: combine the JSON summaries of runs made on several load-generating machines
//! (each `loadgen --format json`, usually started together with `--start-at`) into the figures
//! one load generator would have reported for all of them: ops, errors and CPU add up, the
//! latency histograms merge bucket by bucket (so the percentiles are those of one histogram of
//! every sample, not an average of percentiles), and throughput is every op over the combined
//! wall-clock window. Owns reading and checking those files, which come from other machines and
//! are treated as untrusted: bounded in size, every field checked, any fault a clear error naming
//! the file. Printing is `report`'s.

use crate::hist::{self, Histogram};
use crate::report::{ErrorCounts, Load, Settings, Summary};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

/// A summary file larger than this is not one loadgen wrote (a full histogram is tens of KiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// One input of a merge: its name (the path as given) and its figures.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub summary: Summary,
}

/// Reads and checks one summary file.
pub fn read_input(path: &Path) -> Result<Input, String> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{name}: larger than {} MiB, not a loadgen summary",
            MAX_FILE_BYTES >> 20
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{name}: not UTF-8 text, not a loadgen summary"))?;
    let summary = parse_summary(text).map_err(|e| format!("{name}: {e}"))?;
    Ok(Input { name, summary })
}

/// Parses the JSON object `Summary::to_json` writes.
pub fn parse_summary(text: &str) -> Result<Summary, String> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("not JSON ({e}); expected the output of loadgen --format json"))?;
    let o = v
        .as_object()
        .ok_or("not a JSON object; expected the output of loadgen --format json")?;
    if !o.contains_key("histogram") {
        return Err(
            "no \"histogram\" field: written by a loadgen without merge support? (rerun with this one)"
                .into(),
        );
    }
    let settings_o = obj(o, "settings")?;
    let settings = Settings {
        op: string(settings_o, "settings.op")?,
        read_ratio: float(settings_o, "settings.read_ratio")?,
        consistency: string(settings_o, "settings.consistency")?,
        key_size: uint(settings_o, "settings.key_size")?,
        val_size: uint(settings_o, "settings.val_size")?,
        key_space: uint(settings_o, "settings.key_space")?,
        pipeline: uint(settings_o, "settings.pipeline")?,
        open_loop: boolean(settings_o, "settings.open_loop")?,
        tls: boolean(settings_o, "settings.tls")?,
    };
    if !["put", "get", "mix"].contains(&settings.op.as_str()) {
        return Err(format!("settings.op: unknown operation '{}'", settings.op));
    }
    let load_o = obj(o, "load")?;
    let rate = match load_o.get("rate") {
        None | Some(Value::Null) => None,
        Some(_) => Some(float(load_o, "load.rate")?),
    };
    if rate.is_some() != settings.open_loop {
        return Err("load.rate must be given exactly for open-loop runs".into());
    }
    let load = Load {
        clients: uint(load_o, "load.clients")?,
        conns: uint(load_o, "load.conns")?,
        threads: uint(load_o, "load.threads")?,
        rate,
    };
    let ops = uint(o, "ops")?;
    let not_found = uint(o, "not_found")?;
    let mut errors = ErrorCounts::default();
    for (k, c) in obj(o, "errors_by_kind")? {
        let n = c
            .as_u64()
            .ok_or_else(|| format!("errors_by_kind.{k}: not a count"))?;
        errors.add_named(Cow::Owned(k.clone()), n);
    }
    if errors.total() != uint(o, "errors")? {
        return Err("errors is not the sum of errors_by_kind".into());
    }
    let latency = histogram(o.get("histogram"), "histogram")?;
    if latency.count() != ops {
        return Err(format!(
            "the histogram holds {} samples but ops is {ops}",
            latency.count()
        ));
    }
    if not_found > ops {
        return Err(format!("not_found {not_found} is more than ops {ops}"));
    }
    let by_op = if settings.op == "mix" {
        let get = histogram(obj(o, "get")?.get("histogram"), "get.histogram")?;
        let put = histogram(obj(o, "put")?.get("histogram"), "put.histogram")?;
        if get.count().checked_add(put.count()) != Some(ops) {
            return Err("the get and put histograms do not add up to ops".into());
        }
        Some(Box::new([("get", get), ("put", put)]))
    } else {
        None
    };
    let from = uint(o, "measured_from_unix_ns")?;
    let to = uint(o, "measured_to_unix_ns")?;
    if to < from {
        return Err("measured_to_unix_ns is before measured_from_unix_ns".into());
    }
    let runs = uint(o, "runs")?;
    if runs == 0 {
        return Err("runs: must be at least 1".into());
    }
    let overlap_ns = match o.get("overlap_seconds") {
        None => None,
        Some(_) => Some((float(o, "overlap_seconds")? * 1e9) as u64),
    };
    let open_loop_max_send_lag_ms = match o.get("open_loop_max_send_lag_ms") {
        None => None,
        Some(_) => Some(float(o, "open_loop_max_send_lag_ms")?),
    };
    Ok(Summary {
        ops,
        errors,
        not_found,
        seconds: (to - from) as f64 / 1e9,
        latency,
        cpu_seconds: float(o, "loadgen_cpu_seconds")?,
        settings,
        load,
        runs,
        window_unix_ns: (from, to),
        overlap_ns,
        open_loop_max_send_lag_ms,
        by_op,
    })
}

fn field<'a>(o: &'a Map<String, Value>, path: &str) -> Result<&'a Value, String> {
    let name = path.rsplit('.').next().unwrap_or(path);
    o.get(name).ok_or_else(|| format!("no \"{path}\" field"))
}

fn obj<'a>(o: &'a Map<String, Value>, path: &str) -> Result<&'a Map<String, Value>, String> {
    field(o, path)?
        .as_object()
        .ok_or_else(|| format!("{path}: not an object"))
}

fn uint(o: &Map<String, Value>, path: &str) -> Result<u64, String> {
    field(o, path)?
        .as_u64()
        .ok_or_else(|| format!("{path}: not a whole number from 0 to 2^64-1"))
}

fn float(o: &Map<String, Value>, path: &str) -> Result<f64, String> {
    match field(o, path)?.as_f64() {
        Some(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{path}: not a number of at least 0")),
    }
}

fn string(o: &Map<String, Value>, path: &str) -> Result<String, String> {
    field(o, path)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{path}: not a string"))
}

fn boolean(o: &Map<String, Value>, path: &str) -> Result<bool, String> {
    field(o, path)?
        .as_bool()
        .ok_or_else(|| format!("{path}: not true or false"))
}

/// Decodes a histogram written by `Histogram::to_json`, refusing anything else with the reason.
pub fn histogram(v: Option<&Value>, path: &str) -> Result<Histogram, String> {
    let o = v
        .ok_or_else(|| format!("no \"{path}\" field"))?
        .as_object()
        .ok_or_else(|| format!("{path}: not an object"))?;
    let encoding = o.get("encoding").and_then(Value::as_str).unwrap_or("");
    if encoding != hist::ENCODING {
        return Err(format!(
            "{path}: encoding '{encoding}' is not this loadgen's ({})",
            hist::ENCODING
        ));
    }
    let sub = |name: &str| format!("{path}.{name}");
    let count = uint(o, &sub("count"))?;
    let min_ns = uint(o, &sub("min_ns"))?;
    let max_ns = uint(o, &sub("max_ns"))?;
    let sum_ns = uint(o, &sub("sum_ns"))? as u128;
    let list = o
        .get("buckets")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{path}.buckets: not a list"))?;
    let mut buckets = Vec::with_capacity(list.len().min(1 << 13));
    for b in list {
        match b.as_array().map(|p| p.as_slice()) {
            Some([floor, c]) => match (floor.as_u64(), c.as_u64()) {
                (Some(f), Some(c)) => buckets.push((f, c)),
                _ => return Err(format!("{path}.buckets: {b} is not two whole numbers")),
            },
            _ => return Err(format!("{path}.buckets: {b} is not [lowest_ns, count]")),
        }
    }
    Histogram::from_buckets(count, min_ns, max_ns, sum_ns, &buckets)
        .map_err(|e| format!("{path} does not decode: {e}"))
}

/// Merges the inputs (at least one) into one summary, and the warnings a reader should see: runs
/// that were not measuring at the same time, or whose load generator was itself the limit.
pub fn merge(inputs: &[Input]) -> Result<(Summary, Vec<String>), String> {
    let (first, rest) = inputs.split_first().ok_or("nothing to merge")?;
    let mut m = first.summary.clone();
    let mut overlap_to = m.window_unix_ns.1;
    let mut overlap_from = m.window_unix_ns.0;
    let mut overlap_cap = m.overlap_ns;
    for i in rest {
        let s = &i.summary;
        if let Some(d) = m.settings.difference(&s.settings) {
            return Err(format!(
                "{}: ran another workload than {} ({d}); only runs of one workload merge",
                i.name, first.name
            ));
        }
        m.ops += s.ops;
        m.not_found += s.not_found;
        m.errors.merge(&s.errors);
        m.latency.merge(&s.latency);
        if let (Some(a), Some(b)) = (m.by_op.as_mut(), s.by_op.as_ref()) {
            a[0].1.merge(&b[0].1);
            a[1].1.merge(&b[1].1);
        }
        m.cpu_seconds += s.cpu_seconds;
        m.runs += s.runs;
        m.load.clients += s.load.clients;
        m.load.conns += s.load.conns;
        m.load.threads += s.load.threads;
        m.load.rate = m.load.rate.zip(s.load.rate).map(|(a, b)| a + b);
        m.open_loop_max_send_lag_ms =
            match (m.open_loop_max_send_lag_ms, s.open_loop_max_send_lag_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        m.window_unix_ns.0 = m.window_unix_ns.0.min(s.window_unix_ns.0);
        m.window_unix_ns.1 = m.window_unix_ns.1.max(s.window_unix_ns.1);
        overlap_from = overlap_from.max(s.window_unix_ns.0);
        overlap_to = overlap_to.min(s.window_unix_ns.1);
        overlap_cap = match (overlap_cap, s.overlap_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    m.seconds = (m.window_unix_ns.1 - m.window_unix_ns.0) as f64 / 1e9;
    let together = overlap_to.saturating_sub(overlap_from);
    m.overlap_ns = Some(overlap_cap.map_or(together, |c| c.min(together)));
    let mut warnings = Vec::new();
    let whole = m.window_unix_ns.1 - m.window_unix_ns.0;
    let overlap = m.overlap_ns.unwrap_or(0);
    if m.runs > 1 && (overlap as f64) < 0.9 * whole as f64 {
        warnings.push(format!(
            "the runs were all measuring at once for only {:.3} s of the {:.3} s they cover, so the \
             combined req/s is an average over load that was not all there at once: start them \
             together (--start-at) with the same --duration, and check the machines' clocks agree",
            overlap as f64 / 1e9,
            whole as f64 / 1e9
        ));
    }
    for i in inputs {
        if i.summary.loadgen_saturated() {
            warnings.push(format!(
                "{}: its load generator used {:.0} % of a core with {} thread(s), so that machine may \
                 have been the limit",
                i.name,
                100.0 * i.summary.cpu_seconds / i.summary.seconds.max(1e-9),
                i.summary.load.threads
            ));
        }
    }
    Ok((m, warnings))
}

/// The text report of a merge: one line per input, then the merged summary.
pub fn render_text(inputs: &[Input], merged: &Summary) -> String {
    let t0 = merged.window_unix_ns.0;
    let mut s = String::new();
    for i in inputs {
        let x = &i.summary;
        let h = &x.latency;
        s.push_str(&format!(
            "{}: {} ops in {:.3} s (+{:.3} s to +{:.3} s), {:.0} req/s, p50 {:.1} µs, p99 {:.1} µs, errors {}, {} clients\n",
            i.name,
            x.ops,
            x.seconds,
            (x.window_unix_ns.0 - t0) as f64 / 1e9,
            (x.window_unix_ns.1 - t0) as f64 / 1e9,
            x.req_per_s(),
            h.percentile_ns(50.0) as f64 / 1e3,
            h.percentile_ns(99.0) as f64 / 1e3,
            x.errors.total(),
            x.load.clients
        ));
    }
    s.push('\n');
    s.push_str(&merged.to_text());
    s
}
