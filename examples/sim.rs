//! Runs the deterministic cluster simulator over a range of seeds and reports each failing seed
//! with the command that reproduces it. Owns only flag parsing and reporting; the simulator is
//! `zatt::sim`. Exit status: 0 when every seed passed, 1 when any failed, 2 on a usage error.
//!
//!     cargo run --release --example sim -- --seed-start 1 --seeds 1000
//!     cargo run --release --example sim -- --seed-start 1234 --seeds 1 --verbose
//!     cargo run --release --example sim -- --list-bugs
//!     cargo run --release --example sim -- --bug commit_old_term_by_count --seeds 200

use std::process::ExitCode;
use zatt::sim::faults::{BugName, Profile, BUGS, PROFILES};
use zatt::sim::{Sim, SimOptions, DEFAULT_STEPS};

fn usage(opts: &getopts::Options) -> String {
    let profiles: Vec<&str> = PROFILES.iter().map(|p| p.name()).collect();
    let bugs: Vec<&str> = BUGS.iter().map(|b| b.name()).collect();
    opts.usage(&format!(
        "Usage: sim [options]\nprofiles: {}\nbugs: {}",
        profiles.join(", "),
        bugs.join(", ")
    ))
}

fn main() -> ExitCode {
    let Ok(args) = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect::<Result<Vec<String>, _>>()
    else {
        eprintln!("sim: arguments must be UTF-8 text");
        return ExitCode::from(2);
    };
    let mut o = getopts::Options::new();
    o.optopt("", "seed-start", "first seed (default 1)", "S");
    o.optopt("", "seeds", "number of seeds (default 100)", "N");
    o.optopt(
        "",
        "nodes",
        "voters, 1 to 7 (default: chosen by the seed)",
        "V",
    );
    o.optopt(
        "",
        "profile",
        "fault profile (default: chosen by the seed)",
        "NAME",
    );
    o.optopt(
        "",
        "bug",
        "turn on a known bug, of the Raft core or of the host (see --list-bugs)",
        "NAME",
    );
    o.optflag("", "list-bugs", "list the known-bug switches and exit");
    o.optopt(
        "",
        "steps",
        &format!("events in the fault phase (default {DEFAULT_STEPS})"),
        "N",
    );
    o.optopt("", "clients", "clients (default 4)", "N");
    o.optflag(
        "",
        "control",
        "with --bug: the bug's fault profile with the switch off (must pass)",
    );
    o.optflag("", "stop-at-first", "stop at the first failing seed");
    o.optflag("v", "verbose", "print the trace of every event");
    o.optflag("h", "help", "this help");
    let m = match o.parse(&args) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sim: {e}\n{}", usage(&o));
            return ExitCode::from(2);
        }
    };
    if m.opt_present("help") {
        println!("{}", usage(&o));
        return ExitCode::SUCCESS;
    }
    if m.opt_present("list-bugs") {
        for b in BUGS {
            println!("{:<30} {}", b.name(), b.describe());
        }
        return ExitCode::SUCCESS;
    }
    fn num(m: &getopts::Matches, name: &str, default: u64) -> Result<u64, String> {
        match m.opt_str(name) {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| format!("--{name} wants a number, got {s:?}")),
        }
    }
    let parsed = (|| -> Result<(u64, u64, SimOptions), String> {
        let start = num(&m, "seed-start", 1)?;
        let count = num(&m, "seeds", 100)?;
        let mut base = SimOptions::new(start);
        if let Some(v) = m.opt_str("nodes") {
            let v: usize = v.parse().map_err(|_| "--nodes wants 1 to 7".to_string())?;
            if !(1..=7).contains(&v) {
                return Err("--nodes wants 1 to 7".into());
            }
            base.voters = Some(v);
        }
        if let Some(p) = m.opt_str("profile") {
            base.profile = Some(Profile::parse(&p).ok_or(format!("unknown profile {p:?}"))?);
        }
        if let Some(b) = m.opt_str("bug") {
            base.bug = Some(BugName::parse(&b).ok_or(format!("unknown bug {b:?}"))?);
        }
        base.steps = num(&m, "steps", DEFAULT_STEPS)?;
        base.clients = num(&m, "clients", 4)?.clamp(1, 64) as usize;
        base.verbose = m.opt_present("verbose");
        base.control = m.opt_present("control");
        Ok((start, count, base))
    })();
    let (start, count, base) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("sim: {e}\n{}", usage(&o));
            return ExitCode::from(2);
        }
    };
    let stop_at_first = m.opt_present("stop-at-first");
    let (mut failed, mut steps, mut simulated_us, mut ran) = (0u64, 0u64, 0u64, 0u64);
    let (mut watch_events, mut watch_resumes, mut watch_compacted) = (0u64, 0u64, 0u64);
    for seed in start..start.saturating_add(count) {
        let opts = SimOptions {
            seed,
            ..base.clone()
        };
        let r = Sim::run(opts.clone());
        ran += 1;
        steps += r.steps;
        simulated_us += r.simulated_us;
        watch_events += r.watch_events;
        watch_resumes += r.watch_resumes;
        watch_compacted += r.watch_compacted;
        if base.verbose || count == 1 {
            println!(
                "seed={} voters={} profile={} steps={} simulated_ms={} ops={} completed={} \
                 watch_events={} watch_resumes={} watch_compacted={} trace={:016x}",
                r.seed,
                r.voters,
                r.profile,
                r.steps,
                r.simulated_us / 1000,
                r.ops,
                r.ops_completed,
                r.watch_events,
                r.watch_resumes,
                r.watch_compacted,
                r.trace_hash
            );
        }
        if let Some(f) = &r.failure {
            failed += 1;
            let mut detail = f.detail.clone();
            if !base.verbose && detail.len() > 400 {
                let mut cut = 400;
                while !detail.is_char_boundary(cut) {
                    cut -= 1;
                }
                detail.truncate(cut);
                detail += "…";
            }
            println!(
                "FAIL seed={} {} at {}ms: reproduce with `{}` | {}",
                seed,
                f.kind,
                f.at_us / 1000,
                opts.reproduce_command(),
                detail
            );
            if stop_at_first {
                break;
            }
        }
    }
    println!(
        "seeds={ran} failed={failed} steps={steps} simulated_s={:.1} watch_events={watch_events} \
         watch_resumes={watch_resumes} watch_compacted={watch_compacted}",
        simulated_us as f64 / 1e6
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
