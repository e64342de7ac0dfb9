//! Files, environment and addresses given to `zattd` (and `zatt`) that used to be taken without
//! a check: a file named by a flag is read only if it is a regular file within a stated size
//! (`/dev/zero` as `--config` once grew the process past 2 GB a second), and the refusal is one
//! line with exit 2. Every wait is bounded by a deadline; a process still running at it is
//! killed and the test fails.

mod common;

use common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Generous: a refusal comes before the server opens a socket; only a loaded machine is slow.
const T: Duration = Duration::from_secs(60);

fn assert_refused(args: &[&str], env: &[(&str, &str)], needles: &[&str]) {
    let (code, err) = run_zattd(args, env, T);
    assert_eq!(code, Some(2), "{args:?} {env:?}: exit {code:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?} {env:?}: {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn a_device_named_by_a_file_flag_is_refused_at_once() {
    // Goal: --config and --cluster-secret-file naming /dev/zero exit 2 naming the flag, the
    // path and why, instead of reading without end.
    let dir = temp_dir("cfgdev");
    let d = dir.join("d").display().to_string();
    let cl = format!("1=127.0.0.1:{}", free_port());
    assert_refused(
        &["--config", "/dev/zero", "--id", "1", "--data-dir", &d],
        &[],
        &["--config /dev/zero", "is not a regular file"],
    );
    assert_refused(
        &["--id", "1", "--data-dir", &d, "--cluster", &cl],
        &[("ZATT_CONFIG", "/dev/zero")],
        &["--config /dev/zero", "is not a regular file"],
    );
    let d2 = dir.join("d2").display().to_string();
    assert_refused(
        &[
            "--id",
            "1",
            "--data-dir",
            &d2,
            "--cluster",
            &cl,
            "--initial-cluster-state",
            "new",
            "--cluster-secret-file",
            "/dev/zero",
        ],
        &[],
        &["--cluster-secret-file /dev/zero", "is not a regular file"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_over_its_limit_is_refused_and_one_within_it_is_read() {
    // Goal: a (sparse) config file of 2 MiB is refused naming the limit; the same settings in
    // a small file start the server as far as the next check (here: an oversized secret file,
    // which is refused in turn, proving the config file was read and used).
    let dir = temp_dir("cfgbig");
    let big = dir.join("big.conf");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(2 << 20).unwrap();
    drop(f);
    let d = dir.join("d").display().to_string();
    let big_s = big.display().to_string();
    assert_refused(
        &["--config", &big_s, "--id", "1", "--data-dir", &d],
        &[],
        &["--config", "big.conf", "larger than 1 MiB"],
    );
    let secret = dir.join("secret");
    let f = std::fs::File::create(&secret).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    let small = write_file(
        &dir,
        "small.conf",
        format!(
            "id = 1\ndata-dir = {d}\ncluster = 1=127.0.0.1:{}\ninitial-cluster-state = new\n\
             cluster-secret-file = {}\n",
            free_port(),
            secret.display()
        )
        .as_bytes(),
    );
    assert_refused(
        &["--config", &small.display().to_string()],
        &[],
        &["--cluster-secret-file", "larger than 64 KiB"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn zatt_refuses_a_device_as_tls_ca_within_its_timeout() {
    // Goal: `zatt --tls-ca /dev/zero` ends with one line naming the file, not a read that
    // ignores --timeout and never ends.
    let mut child = zatt_cli()
        .args(["--timeout", "1s", "--endpoints", "127.0.0.1:1"])
        .args(["--tls-ca", "/dev/zero", "get", "a"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = status.expect("zatt --tls-ca /dev/zero still running at the deadline");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("/dev/zero") && err.contains("is not a regular file"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn member_addresses_with_port_0_or_given_twice_are_refused() {
    // Goal: `--cluster 1=127.0.0.1:0` used to bootstrap a member 127.0.0.1:0 and bind random
    // (different) UDP and TCP ports; now it, `--listen ...:0` and two members on one resolved
    // address are exit 2 before anything is written.
    let dir = temp_dir("cfgport");
    let d = dir.join("d");
    let ds = d.display().to_string();
    let p = free_port();
    assert_refused(
        &["--id", "1", "--cluster", "1=127.0.0.1:0", "--data-dir", &ds],
        &[],
        &["--cluster", "port 0"],
    );
    assert_refused(
        &["--id", "1", "--data-dir", &ds, "--join"],
        &[("ZATT_LISTEN", "127.0.0.1:0"), ("ZATT_CLUSTER_ID", "7")],
        &["--listen", "port 0"],
    );
    assert_refused(
        &[
            "--id",
            "1",
            "--data-dir",
            &ds,
            "--cluster",
            &format!("1=localhost:{p},2=127.0.0.1:{p}"),
        ],
        &[],
        &["--cluster", "appears twice"],
    );
    assert!(!d.exists(), "nothing was written");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn environment_values_empty_or_not_utf8() {
    // Goal: an empty ZATT_JOIN or ZATT_FORCE_NEW_CLUSTER (an empty line in a systemd
    // EnvironmentFile) turns nothing on, where it used to act as the switch;
    // a ZATT_ variable that is not UTF-8 is refused naming it, not taken as unset.
    use std::os::unix::ffi::OsStrExt;
    let dir = temp_dir("cfgenv");
    let d = dir.join("d").display().to_string();
    // Both refusals are exit 2, told apart by their reason: with the switch on, the --restore
    // conflict with it is refused first; off, --initial-cluster-state existing is.
    for var in ["ZATT_JOIN", "ZATT_FORCE_NEW_CLUSTER"] {
        let args = [
            "--id",
            "1",
            "--data-dir",
            &d,
            "--cluster",
            "1=127.0.0.1:1",
            "--restore",
            "b.zatt",
            "--initial-cluster-state",
            "existing",
        ];
        let (code, err) = run_zattd(&args, &[(var, "")], T);
        assert_eq!(code, Some(2), "{var}: {err}");
        assert!(
            err.contains("--initial-cluster-state existing")
                && !err.contains("--join or --force-new-cluster"),
            "{var}= must be unset: {err}"
        );
    }
    let out = std::process::Command::new(BIN)
        .args(["--id", "1", "--cluster", "1=127.0.0.1:1"])
        .env(
            "ZATT_DATA_DIR",
            std::ffi::OsStr::from_bytes(b"/tmp/zatt-\xff"),
        )
        .env_remove("ZATT_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ZATT_DATA_DIR") && err.contains("UTF-8"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
