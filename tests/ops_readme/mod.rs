//! Runs the README's "Operating a cluster" command lines as written, for the tests of the
//! features they show: each line must be in the README exactly (one line of an indented
//! block), and is run through bash with the real binaries first on `PATH` and the README's
//! addresses replaced by those of the servers the test started. A comment after the command
//! (two spaces, `#`, a space) is its exact output when the line asks for one with `→`.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

pub const README: &str = include_str!("../../README.md");

/// The line as the README shows it: panics unless it is one of its lines.
pub fn readme_has(line: &str) {
    assert!(
        README.lines().any(|l| l.trim() == line.trim()),
        "README.md does not show the line this test runs: {line}"
    );
}

/// The README's text with its line breaks and runs of spaces as single spaces.
pub fn readme_flat() -> String {
    README.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What running one line did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The output its comment promises (`# → TEXT`), if any.
    pub promised: Option<String>,
}

/// Runs README line `line` in `cwd` (after replacing each `from` with `to`), with `env` set.
pub fn run(line: &str, replace: &[(&str, String)], cwd: &Path, env: &[(&str, String)]) -> Ran {
    readme_has(line);
    let (cmd, comment) = match line.find("  #") {
        Some(i) => (&line[..i], line[i + 3..].trim()),
        None => (line, ""),
    };
    let mut cmd = cmd.trim().to_string();
    for (from, to) in replace {
        cmd = cmd.replace(from, to);
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zatt")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(&cmd)
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("ZATT_TLS_CA")
        .env_remove("ZATT_OUTPUT")
        .env_remove("ZATT_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("bash");
    Ran {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        promised: comment.strip_prefix("→ ").map(str::to_string),
    }
}

/// Runs a line that must exit 0 and print what its comment promises, if anything; its stdout.
pub fn run_ok(
    line: &str,
    replace: &[(&str, String)],
    cwd: &Path,
    env: &[(&str, String)],
) -> String {
    let r = run(line, replace, cwd, env);
    assert_eq!(
        r.code,
        Some(0),
        "README line `{line}`: stdout {} stderr {}",
        r.stdout,
        r.stderr
    );
    if let Some(want) = &r.promised {
        assert_eq!(r.stdout.trim_end(), want, "README line `{line}`");
    }
    r.stdout
}

/// Starts README line `line`, a server started in the background (`... &`), as a child of this
/// test (killed by the caller), with the same replacements as `run`.
pub fn spawn(
    line: &str,
    replace: &[(&str, String)],
    cwd: &Path,
    log: &Path,
) -> std::process::Child {
    readme_has(line);
    let mut cmd = line.trim().trim_end_matches('&').trim().to_string();
    for (from, to) in replace {
        cmd = cmd.replace(from, to);
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zatt")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::fs::File::create(log).unwrap();
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("exec {cmd}"))
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("ZATT_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; the server dies with this test process.
    unsafe {
        use std::os::unix::process::CommandExt;
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c.spawn().expect("spawn")
}
