//! The `loadgen` binary: parse the command line, run the chosen mode, print the result.
//! Exit codes: 0 ok, 1 runtime error (no leader, nothing succeeded), 2 usage error or bad input
//! to `merge`.

use std::io::Write;
use zatt_loadgen::args::{self, Command, Format};

fn main() {
    let mut argv: Vec<String> = Vec::new();
    for (i, a) in std::env::args_os().skip(1).enumerate() {
        match a.into_string() {
            Ok(s) => argv.push(s),
            Err(raw) => {
                eprintln!(
                    "loadgen: argument {} ({}) is not valid UTF-8 (see loadgen --help)",
                    i + 1,
                    raw.to_string_lossy()
                );
                std::process::exit(2);
            }
        }
    }
    let cmd = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e} (see loadgen --help)");
            std::process::exit(2);
        }
    };
    std::process::exit(match cmd {
        Command::Help(text) => {
            print!("{text}");
            0
        }
        Command::Version => {
            print!("{}", args::version());
            0
        }
        Command::Merge { files, format } => merge(&files, format),
        Command::Run(cfg) => {
            let mut err = std::io::stderr();
            match zatt_loadgen::driver::run(&cfg, &mut err) {
                Ok(summary) => {
                    let text = match cfg.format {
                        Format::Json => summary.to_json() + "\n",
                        Format::Text => summary.to_text(),
                    };
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    if summary.ops == 0 {
                        eprintln!("loadgen: no request succeeded");
                        1
                    } else {
                        0
                    }
                }
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    1
                }
            }
        }
        Command::Probe(cfg) => match zatt_loadgen::probe::run_probe(&cfg) {
            Ok(p) => {
                println!("{}", p.render(cfg.format));
                0
            }
            Err(e) => {
                eprintln!("loadgen probe: {e}");
                1
            }
        },
        Command::Status {
            endpoints,
            leader_id_only,
        } => {
            let timeout = std::time::Duration::from_secs(1);
            let mut leader = None;
            for ep in &endpoints {
                match zatt_loadgen::blocking::status_of(*ep, None, timeout) {
                    Some(s) => {
                        if s.role == "leader" {
                            leader = Some(s.id);
                        }
                        if !leader_id_only {
                            println!(
                                "{ep} id={} role={} term={} leader={} commit={} applied={} last={}",
                                s.id,
                                s.role,
                                s.term,
                                s.leader.map_or("none".to_string(), |l| l.to_string()),
                                s.commit_index,
                                s.applied_index,
                                s.last_index
                            );
                        }
                    }
                    None if !leader_id_only => println!("{ep} unreachable"),
                    None => {}
                }
            }
            match (leader_id_only, leader) {
                (true, Some(id)) => {
                    println!("{id}");
                    0
                }
                (true, None) => 1,
                (false, _) => 0,
            }
        }
        Command::Failover(cfg) => {
            let mut err = std::io::stderr();
            match zatt_loadgen::failover::run(&cfg, &mut err) {
                Ok(report) => {
                    println!("{}", report.render(cfg.format).trim_end());
                    if let Some(path) = &cfg.svg {
                        if let Err(e) = std::fs::write(path, report.svg()) {
                            eprintln!("loadgen failover: {}: {e}", path.display());
                            std::process::exit(1);
                        }
                    }
                    if report.trials.is_empty() {
                        1
                    } else {
                        0
                    }
                }
                Err(e) => {
                    eprintln!("loadgen failover: {e}");
                    1
                }
            }
        }
    });
}

/// `loadgen merge`: any unreadable or inconsistent input is exit code 2, before anything is printed.
fn merge(files: &[std::path::PathBuf], format: Format) -> i32 {
    use zatt_loadgen::merge;
    let mut inputs = Vec::with_capacity(files.len());
    for f in files {
        match merge::read_input(f) {
            Ok(i) => inputs.push(i),
            Err(e) => {
                eprintln!("loadgen merge: {e}");
                return 2;
            }
        }
    }
    let (merged, warnings) = match merge::merge(&inputs) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("loadgen merge: {e}");
            return 2;
        }
    };
    for w in &warnings {
        eprintln!("loadgen merge: warning: {w}");
    }
    let text = match format {
        Format::Json => merged.to_json() + "\n",
        Format::Text => merge::render_text(&inputs, &merged),
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    0
}
