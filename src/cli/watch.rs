//! `zatt watch PREFIX [--from REV] [--count N]`: prints each change under PREFIX as it is made,
//! one line per change, until Ctrl-C (exit 0), or until N changes are printed. Text:
//! `REVISION<TAB>put<TAB>KEY<TAB>VALUE` or `REVISION<TAB>delete<TAB>KEY`, keys and values
//! escaped as `zatt scan` escapes them; JSON: one object per line,
//! `{"type":"put","key":..,"value":..,"revision":N}` or `{"type":"delete","key":..,"revision":N}`.
//! The watch resumes by itself on another server when its server goes away (the client
//! library's `Watch`), so the lines have no gap and no repeat. Must not: buffer a change it
//! could print (each line is flushed as it comes), or exit on Ctrl-C with anything but 0.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{client_config, json, report, Failure, Global, Output, EXIT_OK, EXIT_RUNTIME};
use crate::client::{Client, Escaped, WatchEvent};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// How often the loop looks at the stop flag while no change comes.
const POLL: Duration = Duration::from_millis(100);

/// One change as a line of output.
fn line(output: Output, e: &WatchEvent) -> String {
    match output {
        Output::Text => match e {
            WatchEvent::Put {
                key,
                value,
                revision,
            } => format!("{revision}\tput\t{}\t{}\n", Escaped(key), Escaped(value)),
            WatchEvent::Delete { key, revision } => {
                format!("{revision}\tdelete\t{}\n", Escaped(key))
            }
        },
        Output::Json => {
            let mut s = String::from("{");
            json::key(&mut s, "type");
            json::string(&mut s, if e.value().is_some() { "put" } else { "delete" });
            json::key(&mut s, "key");
            json::bytes(&mut s, e.key());
            if let Some(v) = e.value() {
                json::key(&mut s, "value");
                json::bytes(&mut s, v);
            }
            json::key(&mut s, "revision");
            let _ = write!(s, "{}", e.revision());
            s.push_str("}\n");
            s
        }
    }
}

/// Runs the watch until SIGINT or SIGTERM (exit 0), `count` changes printed (exit 0), a
/// failure (exit 1), or standard output closing (exit 0: `zatt watch | head` is done).
pub(super) fn run(
    g: &Global,
    prefix: Vec<u8>,
    from: Option<u64>,
    count: Option<u64>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
    let mut client = match Client::connect(&g.endpoints, client_config(g)) {
        Ok(c) => c,
        Err(e) => return report(err, g, &Failure::Client(e)),
    };
    // Starting is bounded by --timeout; then the watch runs until stopped, and each
    // resumption on another server gets --timeout again.
    client.set_deadline(Some(Instant::now() + g.timeout));
    let mut watch = match client.watch(&prefix, from.unwrap_or(0)) {
        Ok(w) => w,
        Err(e) => return report(err, g, &Failure::Client(e)),
    };
    drop(client);
    let mut printed = 0u64;
    while !STOP.load(Ordering::SeqCst) && count.map_or(true, |n| printed < n) {
        match watch.next_until(Instant::now() + POLL) {
            Ok(Some(e)) => {
                let written = out
                    .write_all(line(g.output, &e).as_bytes())
                    .and_then(|_| out.flush());
                match written {
                    Ok(()) => printed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return EXIT_OK,
                    // `cli::run` remembers the failure and names it on standard error.
                    Err(_) => return EXIT_RUNTIME,
                }
            }
            Ok(None) => {}
            Err(e) => return report(err, g, &Failure::Client(e)),
        }
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_as_documented() {
        // Goal: the output formats, exactly, with the escaping `zatt scan` uses.
        let put = WatchEvent::Put {
            key: b"app/a".to_vec(),
            value: b"x\ty".to_vec(),
            revision: 12,
        };
        let del = WatchEvent::Delete {
            key: b"app/\xff".to_vec(),
            revision: 13,
        };
        assert_eq!(line(Output::Text, &put), "12\tput\tapp/a\tx\\ty\n");
        assert_eq!(line(Output::Text, &del), "13\tdelete\tapp/\\xff\n");
        assert_eq!(
            line(Output::Json, &put),
            "{\"type\":\"put\",\"key\":\"app/a\",\"value\":\"x\\ty\",\"revision\":12}\n"
        );
        assert_eq!(
            line(Output::Json, &del),
            "{\"type\":\"delete\",\"key\":{\"base64\":\"YXBwL/8=\"},\"revision\":13}\n"
        );
    }
}
