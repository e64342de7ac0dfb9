//! Arguments that are not UTF-8 (or otherwise odd) never make `zatt` or `zattd` panic: each is
//! either taken as bytes (zatt's keys, values, paths) or refused in one line with exit 2.
//! (`std::env::args` panics on such an argument; `zattd` and `zatt` used to end in a backtrace,
//! exit 101.) No server is contacted: the one endpoint given refuses connections.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::{Command, Stdio};

fn arg(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

fn run(bin: &str, args: &[OsString]) -> (Option<i32>, String) {
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let o = Command::new(bin)
        .args(args)
        .env("ZATT_ENDPOINTS", &refused)
        .env("ZATT_TIMEOUT", "2s")
        .env_remove("ZATT_CONFIG")
        .env_remove("CARGO")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn zatt_takes_or_refuses_every_argument_without_panicking() {
    let ff = || arg(b"\xff");
    let s = |t: &str| OsString::from(t);
    let cases: Vec<Vec<OsString>> = vec![
        vec![ff()],
        vec![arg(b"--\xff")],
        vec![arg(b"-\xff")],
        vec![s("--timeout"), ff(), s("get"), s("k")],
        vec![s("--endpoints"), ff(), s("get"), s("k")],
        vec![s("--output"), ff(), s("get"), s("k")],
        vec![s("help"), ff()],
        vec![s("status"), s("--field"), ff()],
        vec![s("dev"), s("--nodes"), ff()],
        vec![s("dev"), s("--base-port"), ff()],
        vec![s("member"), ff()],
        vec![s("member"), s("remove"), ff()],
        vec![s("scan"), s("--limit"), ff()],
        vec![s("get"), arg(b"--stale=\xff"), s("k")],
        // Bytes where bytes belong: these reach the (refusing) endpoint, exit 1.
        vec![s("get"), ff()],
        vec![s("put"), ff(), arg(b"\xfe\x01")],
        vec![s("cas"), ff(), ff(), ff()],
        vec![s("put"), s("k"), s("--file"), arg(b"/nonexistent/\xff")],
    ];
    for c in cases {
        let (code, err) = run(env!("CARGO_BIN_EXE_zatt"), &c);
        assert!(matches!(code, Some(1) | Some(2)), "{c:?}: {code:?} {err}");
        assert!(!err.contains("panicked"), "{c:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{c:?}: {err}");
    }
}

#[test]
fn zattd_refuses_an_argument_that_is_not_utf8_in_one_line() {
    for c in [
        vec![arg(b"\xff")],
        vec![OsString::from("--id"), arg(b"\xff")],
        vec![
            OsString::from("--id"),
            OsString::from("1"),
            OsString::from("--data-dir"),
            arg(b"/tmp/zatt-\xff"),
        ],
    ] {
        let (code, err) = run(env!("CARGO_BIN_EXE_zattd"), &c);
        assert_eq!(code, Some(2), "{c:?}: {err}");
        assert!(err.starts_with("zattd: ") && err.contains("UTF-8"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
