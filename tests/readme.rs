//! The README is run as written. Its fenced `sh` blocks are run in order, line by line, in one
//! bash session per part, through the real binaries, against a `zatt dev` cluster started as
//! the tour says (on reserved ports: the README's 127.0.0.1:5254-5259 are mapped to them, and
//! `ZATT_ENDPOINTS` stands for `zatt`'s default). Each line must exit 0, or 1 where its
//! comment says "exit 1"; a comment `# → TEXT` is the line's exact output; a `text` block right
//! after an `sh` block is the output of its last line. Each `rust` block must be an
//! `examples/*.rs` file verbatim; the test command builds the examples, and these tests run
//! them against real clusters and compare their output with the `text` block that follows.
//!
//! Between the tour's blocks and the rest, the test does what the tour asks of the reader by
//! hand: Ctrl-C `zatt dev`, run it again, then run `examples/tour.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{reserve_ports, Cluster, PortLock};

const README: &str = include_str!("../README.md");

/// A fenced block of the README: its language, text, and the `##` section it is in.
#[derive(Debug)]
struct Block {
    lang: String,
    text: String,
    section: String,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<(String, String)> = None;
    for line in README.lines() {
        if let Some((lang, text)) = &mut open {
            if line.trim_end() == "```" {
                out.push(Block {
                    lang: std::mem::take(lang),
                    text: std::mem::take(text),
                    section: section.clone(),
                });
                open = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if let Some(lang) = line.strip_prefix("```") {
            open = Some((lang.trim().to_string(), String::new()));
        } else if let Some(h) = line.strip_prefix("## ") {
            section = h.to_string();
        }
    }
    assert!(open.is_none(), "README: an unclosed code fence");
    out
}

/// The `text` block right after block `i`, if any.
fn output_after(bs: &[Block], i: usize) -> Option<&str> {
    bs.get(i + 1)
        .filter(|b| b.lang == "text")
        .map(|b| b.text.as_str())
}

/// The example a `rust` block shows: its first line is `// examples/NAME.rs: ...`.
fn example_name(b: &Block) -> String {
    let first = b.text.lines().next().unwrap_or_default();
    let path = first
        .strip_prefix("// examples/")
        .and_then(|r| r.split_once(".rs:"))
        .unwrap_or_else(|| panic!("a rust block must start `// examples/NAME.rs:`: {first}"));
    path.0.to_string()
}

#[test]
fn rust_blocks_are_the_examples_verbatim() {
    // Goal: the Rust the README shows is what the tests compile and run, character for
    // character, and each shows the output it prints.
    let bs = blocks();
    let rust: Vec<usize> = (0..bs.len()).filter(|&i| bs[i].lang == "rust").collect();
    assert_eq!(rust.len(), 4, "tour, client, dict and watch examples");
    for i in rust {
        let name = example_name(&bs[i]);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
        let file = std::fs::read_to_string(&path).unwrap();
        assert!(
            file == bs[i].text,
            "README's block differs from {}; copy the file into the README",
            path.display()
        );
        assert!(output_after(&bs, i).is_some(), "{name}: no output shown");
    }
}

/// The compiled example `name` (built by `cargo test` next to the test binaries).
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = profile_dir.join("examples").join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let written = std::fs::metadata(&src).and_then(|m| m.modified()).unwrap();
    match built {
        Ok(t) if t >= written => bin,
        _ => panic!(
            "{} is missing or older than {}: run the README's test command, which builds the \
             examples (or cargo build --release --examples)",
            bin.display(),
            src.display()
        ),
    }
}

/// Runs example `name` against `endpoints`; its stdout.
fn run_example(name: &str, endpoints: &str) -> String {
    let o = Command::new(example_bin(name))
        .env("ZATT_ENDPOINTS", endpoints)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "example {name} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_client_and_dict_examples_print_what_the_readme_shows() {
    // Goal: the Rust client sections' examples run against a real, fresh cluster as shown.
    let bs = blocks();
    for i in (0..bs.len()).filter(|&i| bs[i].lang == "rust") {
        let name = example_name(&bs[i]);
        if name == "tour" {
            continue; // run by the tour, after its commands
        }
        let cluster = Cluster::start(3, &[]);
        cluster.wait_leader(Duration::from_secs(30));
        let endpoints = cluster.endpoints();
        let out = run_example(&name, &endpoints.join(","));
        assert_eq!(out, output_after(&bs, i).unwrap(), "examples/{name}.rs");
    }
}

/// One command line of an `sh` block, with what its comment promises.
#[derive(Debug)]
struct Line {
    cmd: String,
    /// `# → TEXT`: its exact output.
    output: Option<String>,
    /// Its comment says "exit 1".
    may_exit_1: bool,
}

fn lines_of(block: &str) -> Vec<Line> {
    let mut joined: Vec<String> = Vec::new();
    let mut cont = false;
    for l in block.lines() {
        if cont {
            let last = joined.last_mut().unwrap();
            last.push(' ');
            last.push_str(l.trim());
        } else {
            joined.push(l.to_string());
        }
        cont = l.ends_with('\\');
        if cont {
            let last = joined.last_mut().unwrap();
            last.pop();
        }
    }
    joined
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // Comments stand two spaces or more after the command.
            let (cmd, comment) = match l.find("  #") {
                Some(i) => (&l[..i], l[i + 3..].trim()),
                None => (l.as_str(), ""),
            };
            Line {
                cmd: cmd.trim().to_string(),
                output: comment.strip_prefix("→ ").map(str::to_string),
                may_exit_1: comment.contains("exit 1"),
            }
        })
        .collect()
}

/// The README's ports and the reserved ones standing for them.
struct Ports {
    map: Vec<(u16, u16)>,
}

impl Ports {
    fn apply(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (from, to) in &self.map {
            t = t.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
        }
        assert!(
            !t.contains("127.0.0.1:525"),
            "a README address without a reserved port standing for it: {t}"
        );
        t
    }
}

/// A `zatt dev` the test started, stopped (SIGINT) and waited for when dropped.
struct Dev {
    child: Child,
    seen: Vec<String>,
    _lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start(cwd: &Path, base: u16) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zatt"))
            .args(["dev", "--base-port", &base.to_string()])
            .current_dir(cwd)
            .env_remove("CARGO")
            .env_remove("ZATT_ENDPOINTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => {
                    let ready = l.starts_with("ready:");
                    seen.push(l);
                    if ready {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("zatt dev never became ready: {seen:#?}");
                }
            }
        }
        Dev {
            child,
            seen,
            _lines: rx,
        }
    }

    /// Ctrl-C, as the tour asks; its exit code.
    fn stop(&mut self) -> Option<i32> {
        // SAFETY: signalling a child this test started and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// What one line did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `lines` in one bash session in `cwd`, each with its output captured apart; kills
/// whatever the session left running (its process group) before returning.
fn run_session(cwd: &Path, lines: &[Line], env: &[(&str, String)]) -> Vec<Ran> {
    let dir = cwd.join(".readme-session");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut script = String::from("shopt -s expand_aliases\n");
    for (i, l) in lines.iter().enumerate() {
        let d = dir.display();
        script.push_str(&format!(
            "{{ {}\n}} > {d}/out.{i} 2> {d}/err.{i}; echo $? > {d}/rc.{i}\n",
            l.cmd
        ));
    }
    let script_path = dir.join("script.sh");
    std::fs::write(&script_path, &script).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&script_path)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for v in [
        "ZATT_TLS_CA",
        "ZATT_CERT",
        "ZATT_KEY",
        "ZATT_OUTPUT",
        "CARGO",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id() as libc::pid_t;
    let deadline = Instant::now() + Duration::from_secs(300);
    let finished = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: the process group this test created for the session (background servers the
    // README starts are in it); killing it stops only what the session started.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let read = |name: String| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let ran: Vec<Ran> = (0..lines.len())
        .map(|i| Ran {
            code: read(format!("rc.{i}")).trim().parse().ok(),
            stdout: read(format!("out.{i}")),
            stderr: read(format!("err.{i}")),
        })
        .collect();
    assert!(
        finished,
        "the README's commands did not finish within 300 s"
    );
    ran
}

/// Checks each line's exit code and promised output, and the `text` block after the last.
fn check(lines: &[Line], ran: &[Ran], last_output: Option<&str>, ports: &Ports) {
    for (l, r) in lines.iter().zip(ran) {
        let ok = r.code == Some(0) || (l.may_exit_1 && r.code == Some(1));
        assert!(
            ok,
            "README line `{}` exited {:?}\nstdout: {}\nstderr: {}",
            l.cmd, r.code, r.stdout, r.stderr
        );
        if let Some(want) = &l.output {
            assert_eq!(r.stdout.trim_end(), want, "README line `{}`", l.cmd);
        }
    }
    if let (Some(want), Some(r)) = (last_output, ran.last()) {
        let got = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(got.trim_end(), ports.apply(want).trim_end());
    }
}

#[test]
fn the_tour_and_the_command_line_examples_run_as_written() {
    // Goal: a newcomer following the README meets exactly what it says. Method: run every `sh`
    // block through bash and the real binaries against `zatt dev`, as described in the module
    // documentation; restart `zatt dev` where the tour says to; run examples/tour.rs.
    let dev_ports = reserve_ports(3);
    let extra: Vec<PortLock> = (0..2).map(|_| reserve_ports(1).pop().unwrap()).collect();
    let base = dev_ports[0].port;
    let ports = Ports {
        map: vec![
            (5254, base),
            (5255, base + 1),
            (5256, base + 2),
            (5257, extra[0].port),
            (5259, extra[1].port),
        ],
    };
    let cwd = common::temp_dir("readme");
    // The tour runs from the repository's directory: ./target/release holds the binaries.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_zatt")).parent().unwrap();
    std::fs::create_dir_all(cwd.join("target")).unwrap();
    std::os::unix::fs::symlink(bin_dir, cwd.join("target/release")).unwrap();
    let endpoints = ports.apply("127.0.0.1:5254,127.0.0.1:5255,127.0.0.1:5256");
    let env = [
        ("ZATT_ENDPOINTS", endpoints.clone()),
        // The machine is shared: give elections room; nothing here is about speed.
        ("ZATT_TIMEOUT", "30s".to_string()),
    ];

    let bs = blocks();
    let sh: Vec<usize> = (0..bs.len()).filter(|&i| bs[i].lang == "sh").collect();
    let (tour, rest): (Vec<usize>, Vec<usize>) =
        sh.into_iter().partition(|&i| bs[i].section == "A tour");
    assert!(tour.len() >= 3 && !rest.is_empty(), "{bs:#?}");

    let mut dev = Dev::start(&cwd, base);
    let mut alias_line = None;
    for &i in &tour {
        let lines = lines_of(&ports.apply(&bs[i].text));
        if alias_line.is_none() {
            alias_line = lines
                .iter()
                .find(|l| l.cmd.starts_with("alias zatt="))
                .map(|l| l.cmd.clone());
        }
        let ran = run_session(&cwd, &lines_with_alias(&alias_line, lines), &env);
        let lines = lines_of(&ports.apply(&bs[i].text));
        let skip = ran.len() - lines.len();
        check(&lines, &ran[skip..], output_after(&bs, i), &ports);
    }
    let alias_line = alias_line.expect("the tour defines `alias zatt=...`");

    // "press Ctrl-C and run it again, and all three come back with their data"
    assert_eq!(dev.stop(), Some(0), "zatt dev after Ctrl-C");
    drop(dev);
    let dev = Dev::start(&cwd, base);
    assert!(
        !dev.seen.iter().any(|l| l.contains("does not run")),
        "node 4 was removed by the tour: {:#?}",
        dev.seen
    );
    let o = Command::new(env!("CARGO_BIN_EXE_zatt"))
        .args([
            "--endpoints",
            &endpoints,
            "--timeout",
            "30s",
            "get",
            "after-crash",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "yes");

    let tour_rust = (0..bs.len())
        .find(|&i| bs[i].lang == "rust" && example_name(&bs[i]) == "tour")
        .expect("the tour's Rust example");
    assert_eq!(
        run_example("tour", &endpoints),
        output_after(&bs, tour_rust).unwrap()
    );

    for &i in &rest {
        let lines = lines_of(&ports.apply(&bs[i].text));
        let n = lines.len();
        let ran = run_session(
            &cwd,
            &lines_with_alias(&Some(alias_line.clone()), lines),
            &env,
        );
        let lines = lines_of(&ports.apply(&bs[i].text));
        check(&lines, &ran[ran.len() - n..], output_after(&bs, i), &ports);
    }
    drop(dev);
    let _ = std::fs::remove_dir_all(&cwd);
}

/// Each session is a fresh bash: the tour's alias line (from the README) starts it, unless the
/// block itself begins with it.
fn lines_with_alias(alias: &Option<String>, lines: Vec<Line>) -> Vec<Line> {
    match alias {
        Some(a) if !lines.first().is_some_and(|l| &l.cmd == a) => {
            let mut v = vec![Line {
                cmd: a.clone(),
                output: None,
                may_exit_1: false,
            }];
            v.extend(lines);
            v
        }
        _ => lines,
    }
}
