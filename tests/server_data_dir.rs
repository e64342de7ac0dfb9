//! A data directory that lost its log, on a real `zattd`:
//! - `a_data_directory_whose_log_was_removed_is_refused_and_its_snapshot_kept`: a server with
//!   a snapshot is stopped and its log segments removed (hard-state, identity and cluster-id
//!   files kept); started again it exits 65 naming the missing log, and the snapshot file is
//!   still there, not deleted as unreferenced.
//! - `existing_refuses_what_a_failed_start_left_behind`: a first start stopped while it asks
//!   its peers leaves hard-state files, a segment and an identity; `--initial-cluster-state
//!   existing` then refuses the directory (exit 2) like an empty one, changing nothing in it.
//! - `a_start_refused_for_its_files_or_ports_leaves_the_data_directory_as_it_was`: a start
//!   refused for a TLS file, the cluster secret, a busy port or a missing `--cluster` exits with
//!   one line naming the flag (2 for files and flags, 1 for a busy port) and leaves an absent
//!   data directory absent and an empty one empty; the same directory then starts and serves.
//! - `oversize_or_special_files_in_the_data_directory_are_refused_unread`: a `cluster-id` or
//!   `identity` file made huge (sparse), or either or a hard-state file replaced by a FIFO,
//!   refuses the restart (exit 65) naming the file and why, without reading it; put back, the
//!   server starts with its data.
//!   A huge forced-new-cluster marker still refuses a second force, quoting its size only.
//! - `a_data_dir_that_is_not_a_directory_is_refused_naming_it`: a regular file as `--data-dir`,
//!   or in the way of its parents, is exit 2 naming the path that is not a directory.

mod common;

use common::{reserve_ports, run_zattd, temp_dir, Cluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn files_ending(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(ext));
    v.sort();
    v
}

#[test]
fn a_data_directory_whose_log_was_removed_is_refused_and_its_snapshot_kept() {
    let mut c = Cluster::start(1, &["--snapshot-entries", "20"]);
    c.wait_leader(T);
    for k in 0..25 {
        c.put(&format!("k{k:02}"), "v");
    }
    let dir = c.node(1).data_dir.clone();
    let deadline = Instant::now() + T;
    while files_ending(&dir, ".snap").is_empty() {
        assert!(Instant::now() < deadline, "no snapshot within {T:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.terminate(1), Some(0));
    let snaps = files_ending(&dir, ".snap");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let segs = files_ending(&dir, ".wal");
    assert!(!segs.is_empty());
    for s in &segs {
        std::fs::remove_file(s).unwrap();
    }
    c.restart(1);
    assert_eq!(c.wait_exit(1, T), Some(65), "{}", c.log_of(1));
    let log = c.log_of(1);
    assert!(
        log.contains("0000000000000001.wal") && log.contains("no log segment"),
        "names the missing log: {log}"
    );
    assert_eq!(
        files_ending(&dir, ".snap"),
        snaps,
        "the snapshot file is kept"
    );
    assert!(files_ending(&dir, ".wal").is_empty(), "nothing created");
}

/// Every file of `dir` with its contents.
fn snapshot_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), std::fs::read(e.path()).unwrap()))
        .collect()
}

#[test]
fn existing_refuses_what_a_failed_start_left_behind() {
    let ports = reserve_ports(3);
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{}", i + 1, p.port))
        .collect::<Vec<_>>()
        .join(",");
    let dir = temp_dir("failedstart");
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    let base = ["--id", "1", "--cluster", &cluster, "--data-dir", d];
    common::leave_a_stopped_first_start(&data);
    assert!(data.join("hardstate.0").exists() && data.join("identity").exists());
    let before = snapshot_of(&data);
    let existing = [&base[..], &["--initial-cluster-state", "existing"]].concat();
    let (code, out) = run_zattd(&existing, &[], T);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("refusing to start") && out.contains("zatt member remove 1"),
        "{out}"
    );
    assert!(!out.contains("bootstrapped"), "{out}");
    assert_eq!(snapshot_of(&data), before, "nothing written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_that_is_not_a_directory_is_refused_naming_it() {
    // Goal: `--data-dir FILE` (a regular file) and `--data-dir FILE/sub` exit 2 saying which
    // path is not a directory, where they said "File exists" (exit 1); the file is untouched.
    let dir = temp_dir("notadir");
    let file = common::write_file(&dir, "file", b"keep me");
    let f = file.display().to_string();
    let sub = file.join("sub").display().to_string();
    let cl = format!("1=127.0.0.1:{}", common::free_port());
    for (args, needle) in [
        (
            vec!["--id", "1", "--cluster", &cl, "--data-dir", &f],
            format!("--data-dir {f}: not a directory"),
        ),
        (
            vec!["--id", "1", "--cluster", &cl, "--data-dir", &sub],
            format!("--data-dir {sub}: {f} is not a directory"),
        ),
        (
            vec!["--id", "1", "--data-dir", &f, "--force-new-cluster"],
            format!("--data-dir {f}: not a directory"),
        ),
    ] {
        let (code, out) = run_zattd(&args, &[], T);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(&needle), "{args:?}: {out}");
        assert_eq!(out.trim_end().lines().count(), 1, "one line: {out}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The names in `dir`, or None when it does not exist.
fn entries(dir: &Path) -> Option<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            Some(v)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

#[test]
fn a_start_refused_for_its_files_or_ports_leaves_the_data_directory_as_it_was() {
    // Goal: every refusal that needs no data directory comes before its first byte. These used
    // to leave `identity`, `hardstate.*`, `LOCK` and a 64 MiB segment behind (and a later
    // `--initial-cluster-state existing` start then found a half-made directory). Method: one
    // server's data directory, absent and then empty, through each refusal in turn; then the
    // same directory starts with good flags and serves.
    let files = common::temp_dir("refused");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert = common::write_file(&files, "server.pem", cert.pem().as_bytes());
    let key = common::write_file(&files, "server.key", key.serialize_pem().as_bytes());
    let junk = common::write_file(&files, "junk.pem", b"not PEM\n");
    let empty = common::write_file(&files, "secret", b"\n");
    let [cert, key, junk, empty] = [cert, key, junk, empty].map(|p| p.display().to_string());
    let nope = files.join("nope").display().to_string();
    // Held for the whole test: the --metrics-listen address that is in use.
    let http_held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_http = http_held.local_addr().unwrap().to_string();

    // The first attempt is the cluster's own start.
    let mut c = Cluster::start(1, &["--tls-cert", &nope, "--tls-key", &nope]);
    let data = c.node(1).data_dir.clone();
    let port = c.node(1).port.port;
    let cluster = c.node(1).first_start.clone();
    #[derive(Debug)]
    enum Busy {
        Nothing,
        Udp,
        Tcp,
    }
    /// Flags beyond the timings, whether `--cluster` is given, which of the server's ports
    /// this test holds, the exit status and the words of the refusal.
    type Case<'a> = (Vec<&'a str>, bool, Busy, i32, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            vec!["--tls-cert", &nope, "--tls-key", &nope],
            true,
            Busy::Nothing,
            2,
            vec![format!("--tls-cert {nope}: No such file or directory")],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &nope],
            true,
            Busy::Nothing,
            2,
            vec![format!("--tls-key {nope}: No such file or directory")],
        ),
        (
            vec!["--tls-cert", &junk, "--tls-key", &key],
            true,
            Busy::Nothing,
            2,
            vec![format!("--tls-cert {junk}: no certificate")],
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &nope,
            ],
            true,
            Busy::Nothing,
            2,
            vec![format!("--tls-client-ca {nope}: No such file or directory")],
        ),
        (
            vec!["--cluster-secret-file", &nope],
            true,
            Busy::Nothing,
            2,
            vec![format!(
                "--cluster-secret-file {nope}: No such file or directory"
            )],
        ),
        (
            vec!["--cluster-secret-file", &empty],
            true,
            Busy::Nothing,
            2,
            vec![format!("--cluster-secret-file {empty} is empty")],
        ),
        (
            vec!["--metrics-listen", &busy_http],
            true,
            Busy::Nothing,
            1,
            vec![format!(
                "{busy_http} (--metrics-listen): address already in use"
            )],
        ),
        (
            vec![],
            true,
            Busy::Udp,
            1,
            vec!["(UDP): address already in use".to_string()],
        ),
        (
            vec![],
            true,
            Busy::Tcp,
            1,
            vec!["(TCP): address already in use".to_string()],
        ),
        (
            vec![],
            false,
            Busy::Nothing,
            2,
            vec!["first start needs --cluster".to_string()],
        ),
    ];
    let mut first = true;
    for make_empty in [false, true] {
        if make_empty {
            std::fs::create_dir_all(&data).unwrap();
        }
        let want = entries(&data);
        assert_eq!(want, make_empty.then(Vec::new));
        for (extra, with_cluster, busy, code, needles) in &cases {
            let _held: Box<dyn std::any::Any> = match busy {
                Busy::Nothing => Box::new(()),
                Busy::Udp => Box::new(std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap()),
                Busy::Tcp => Box::new(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()),
            };
            // The cluster's own start wrote its log from the beginning.
            let from = if first { 0 } else { c.log_of(1).len() };
            if !first {
                let n = &mut c.nodes[0];
                n.extra = common::FAST.iter().map(|s| s.to_string()).collect();
                n.extra.extend(extra.iter().map(|s| s.to_string()));
                n.first_start = if *with_cluster {
                    cluster.clone()
                } else {
                    Vec::new()
                };
                c.start_with_first_command(1);
            }
            first = false;
            let got = c.wait_exit(1, T);
            let out = c.log_of(1)[from..].to_string();
            let what = format!("{extra:?} busy {busy:?} (empty directory: {make_empty})");
            assert_eq!(got, Some(*code), "{what}: {out}");
            for n in needles {
                assert!(out.contains(n.as_str()), "{what}: wants {n:?}: {out}");
            }
            assert!(
                out.starts_with("zattd: ") && out.trim_end().lines().count() == 1,
                "{what}: one line: {out}"
            );
            assert_eq!(entries(&data), want, "{what}: the data directory changed");
        }
    }
    let n = &mut c.nodes[0];
    n.extra = common::FAST.iter().map(|s| s.to_string()).collect();
    n.first_start = cluster;
    c.start_with_first_command(1);
    c.wait_leader(T);
    c.put("k", "v");
    assert!(data.join("identity").exists() && data.join("cluster-id").exists());
    let _ = std::fs::remove_dir_all(&files);
}

fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path only.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "{}",
        p.display()
    );
}

#[test]
fn oversize_or_special_files_in_the_data_directory_are_refused_unread() {
    // Goal: the data directory's small files are read with a bound fitting their format: a
    // `cluster-id` or `identity` of a GiB (sparse: it costs no disk) used to be read whole
    // into memory, and a FIFO in their place made the start wait forever for a writer. Now
    // each refuses the start (exit 65, one line naming the file and why) before it is read.
    let mut c = Cluster::start(1, &[]);
    c.wait_leader(T);
    c.put("k", "v");
    assert_eq!(c.terminate(1), Some(0));
    let dir = c.node(1).data_dir.clone();
    for (name, fifo) in [
        ("cluster-id", false),
        ("cluster-id", true),
        ("identity", false),
        ("identity", true),
        ("hardstate.0", true),
    ] {
        let path = dir.join(name);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let needle = if fifo {
            mkfifo(&path);
            "not a regular file"
        } else {
            std::fs::File::create(&path)
                .unwrap()
                .set_len(1 << 30)
                .unwrap();
            "is larger than"
        };
        let from = c.log_of(1).len();
        c.restart(1);
        let code = c.wait_exit(1, T);
        let out = c.log_of(1)[from..].to_string();
        assert_eq!(code, Some(65), "{name} (fifo: {fifo}): {out}");
        assert!(
            out.contains(&path.display().to_string()) && out.contains(needle),
            "{name} (fifo: {fifo}): {out}"
        );
        assert_eq!(out.trim_end().lines().count(), 1, "one line: {out}");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &kept).unwrap();
    }
    // The marker of a forced new cluster still refuses a second force, huge as it is, and
    // the refusal quotes its size, not its bytes.
    let marker = dir.join("forced-new-cluster");
    std::fs::File::create(&marker)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let d = dir.display().to_string();
    let (code, out) = run_zattd(
        &["--id", "1", "--data-dir", &d, "--force-new-cluster"],
        &[],
        T,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("already forced") && out.contains("is larger than 4 KiB"),
        "{}",
        &out[..out.len().min(500)]
    );
    assert!(out.len() < 1000, "one short line: {} bytes", out.len());
    std::fs::remove_file(&marker).unwrap();
    c.restart(1);
    c.wait_leader(T);
    c.wait_value(1, "k", Some("v"), T);
}

#[test]
fn a_second_server_on_a_directory_in_use_is_told_so_not_that_its_port_is_taken() {
    // Goal: a second zattd on the data directory (and so the port) of a running one exits 1
    // naming the directory's LOCK, as before the ports were bound ahead of the directory,
    // and the running server goes on serving. Method: one-member cluster, then the same
    // --id/--data-dir/--listen again.
    let c = Cluster::start(1, &[]);
    c.wait_leader(Duration::from_secs(10));
    let node = c.node(1);
    let d = node.data_dir.display().to_string();
    let (code, out) = run_zattd(
        &["--id", "1", "--data-dir", &d, "--listen", &node.addr],
        &[],
        T,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("is in use by another process (LOCK is held)"),
        "{out}"
    );
    assert!(!out.contains("address already in use"), "{out}");
    c.put("still", "serving");
    c.check_exits();
}
