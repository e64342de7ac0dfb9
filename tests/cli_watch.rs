//! `zatt watch` as a process against a real cluster: the text and JSON lines exactly as
//! documented, only changes under the prefix, nothing for a write that changed nothing, a
//! replay with `--from`, the line stream going on through a leader kill, Ctrl-C (SIGINT)
//! exiting 0, a start older than the history exiting 1 with the reason, and usage errors.
//! Every wait is bounded; nothing asserts on timing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{zatt_cli, Cluster};
use zatt::client::{Client, ClientConfig, Expect};

const T: Duration = Duration::from_secs(30);

fn client(c: &Cluster) -> Client {
    let eps = c.endpoints();
    let config = ClientConfig {
        timeout: T,
        ..ClientConfig::default()
    };
    Client::connect(&eps, config).unwrap()
}

/// A running `zatt watch` and its standard output, line by line.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(endpoints: &str, args: &[&str]) -> Watcher {
        let mut child = zatt_cli()
            .args(["--endpoints", endpoints, "--timeout", "20s"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run zatt watch");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines }
    }

    /// The next `n` lines, within `T`.
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + T;
        (0..n)
            .map(|i| {
                let left = deadline.saturating_duration_since(Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|_| panic!("line {} of {n} did not come", i + 1))
            })
            .collect()
    }

    /// SIGINT, as Ctrl-C sends; the exit code and standard error.
    fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        let deadline = Instant::now() + T;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                return (st.code(), err);
            }
            assert!(Instant::now() < deadline, "zatt watch ignored SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a marker key until `zatt watch` prints its change (the watch starts at the
/// cluster's revision when it is in place, so earlier writes are not printed), then takes the
/// lines of every later marker too, so that only what the test writes next remains.
fn sync_with(w: &Watcher, c: &mut Client, prefix: &str) {
    let deadline = Instant::now() + T;
    let mut revs = Vec::new();
    loop {
        revs.push(c.put(format!("{prefix}marker"), "m").unwrap());
        if let Ok(l) = w.lines.recv_timeout(Duration::from_millis(500)) {
            let rev: u64 = l
                .split(['\t', ':', ',', '}'])
                .find_map(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("no revision in {l}"));
            let k = revs
                .iter()
                .position(|r| *r == rev)
                .unwrap_or_else(|| panic!("{l} is not a marker's change ({revs:?})"));
            w.take(revs.len() - k - 1);
            return;
        }
        assert!(Instant::now() < deadline, "zatt watch printed nothing");
    }
}

#[test]
fn zatt_watch_prints_each_change_under_its_prefix_and_exits_0_on_ctrl_c() {
    // Goal: the text lines exactly as documented, changes under the prefix only, none for a
    // write that changed nothing, in revision order; SIGINT ends it with 0.
    let c = Cluster::start(3, &[]);
    c.wait_leader(T);
    let mut cl = client(&c);
    let w = Watcher::start(&c.endpoints().join(","), &["watch", "app/"]);
    sync_with(&w, &mut cl, "app/");
    let r1 = cl.put("app/a", "one two").unwrap();
    cl.put("other/b", "x").unwrap();
    cl.delete("app/absent").unwrap();
    let failed = cl.cas(
        "app/a",
        Expect::Value(b"nope".to_vec()),
        Some(b"z".to_vec()),
    );
    assert!(failed.is_err());
    let r2 = cl
        .cas(
            "app/a",
            Expect::Value(b"one two".to_vec()),
            Some(b"tab\there".to_vec()),
        )
        .unwrap();
    let (_, r3) = cl.delete_with_revision("app/a").unwrap();
    assert_eq!(
        w.take(3),
        vec![
            format!("{r1}\tput\tapp/a\tone two"),
            format!("{r2}\tput\tapp/a\ttab\\there"),
            format!("{r3}\tdelete\tapp/a"),
        ]
    );
    let (code, err) = w.interrupt();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn zatt_watch_json_replays_from_a_revision_and_goes_on_through_a_leader_kill() {
    // Goal: `--output json --from REV` prints the changes still kept from REV on, then new
    // ones, through a kill -9 of the leader, without a gap or a repeat.
    let mut c = Cluster::start(3, &[]);
    let leader = c.wait_leader(T);
    let mut cl = client(&c);
    let r1 = cl.put("j/a", "1").unwrap();
    let (_, r2) = cl.delete_with_revision("j/a").unwrap();
    let from = r1.to_string();
    // Connected to the leader first, so that killing it makes the watch resume elsewhere.
    let mut eps = vec![c.addr(leader)];
    eps.extend(
        c.nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.addr.clone()),
    );
    let w = Watcher::start(
        &eps.join(","),
        &["--output", "json", "watch", "j/", "--from", &from],
    );
    assert_eq!(
        w.take(2),
        vec![
            format!("{{\"type\":\"put\",\"key\":\"j/a\",\"value\":\"1\",\"revision\":{r1}}}"),
            format!("{{\"type\":\"delete\",\"key\":\"j/a\",\"revision\":{r2}}}"),
        ]
    );
    c.kill(leader);
    let mut want = Vec::new();
    for i in 0..20 {
        let r = cl.put(format!("j/{i}"), format!("v{i}")).unwrap();
        want.push(format!(
            "{{\"type\":\"put\",\"key\":\"j/{i}\",\"value\":\"v{i}\",\"revision\":{r}}}"
        ));
    }
    assert_eq!(w.take(20), want);
    let (code, err) = w.interrupt();
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn zatt_watch_from_a_revision_no_longer_kept_exits_1_and_bad_usage_exits_2() {
    // Goal: a start older than the servers' history is reported (exit 1, naming the oldest
    // revision); a malformed --from or a missing prefix is a usage error (exit 2).
    let c = Cluster::start(1, &["--watch-history-changes", "5"]);
    c.wait_leader(T);
    let mut cl = client(&c);
    for i in 0..20 {
        cl.put(format!("k{i}"), "v").unwrap();
    }
    let o = zatt_cli()
        .args([
            "--endpoints",
            &c.endpoints().join(","),
            "watch",
            "",
            "--from",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no longer kept"), "{err}");
    for bad in [
        &["watch"][..],
        &["watch", "p", "--from", "0"],
        &["watch", "p", "--from", "x"],
        &["watch", "a", "b"],
    ] {
        let o = zatt_cli()
            .args(["--endpoints", &c.endpoints().join(",")])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
}
