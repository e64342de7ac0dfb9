//! `zattd`: one Zatt server. Parses flags, environment and config file (`config.rs`), sets up
//! logging, then hands over to the event loop (`event_loop`). Holds no logic of its own so
//! that tests reach everything through the library. `zattd --help` lists every flag.

use std::process::ExitCode;
use zatt::config::{parse_args_with, process_env, Invocation};
use zatt::event_loop::{install_signal_handlers, Server};

fn main() -> ExitCode {
    // Flags are text: an argument that is not UTF-8 is refused with its position, never a panic.
    let mut args: Vec<String> = Vec::new();
    for (i, a) in std::env::args_os().skip(1).enumerate() {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(raw) => {
                eprintln!(
                    "zattd: argument {} ({:?}) is not valid UTF-8 (see zattd --help)",
                    i + 1,
                    raw
                );
                return ExitCode::from(zatt::config::EXIT_USAGE as u8);
            }
        }
    }
    let cfg = match parse_args_with(&args, &process_env) {
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("zattd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Run(cfg)) => *cfg,
        Err(e) => {
            eprintln!("zattd: {}", e.message);
            return ExitCode::from(e.exit_code as u8);
        }
    };
    // Timestamps in UTC: several servers' logs side by side must line up.
    let _ = simple_logger::SimpleLogger::new()
        .with_level(cfg.log_level)
        .with_utc_timestamps()
        .init();
    install_signal_handlers();
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zattd: {}", e.message);
            return ExitCode::from(e.exit_code as u8);
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zattd: {}", e.message);
            ExitCode::from(e.exit_code as u8)
        }
    }
}
