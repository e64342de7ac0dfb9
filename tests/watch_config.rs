//! `zattd`'s watch flags: defaults a user never has to set, each flag, environment variable and
//! config-file line taken, and bad values refused with a clear usage error (exit 2, one line).

mod common;

use std::time::Duration;

use common::{temp_dir, write_file};
use zatt::config::{parse_args, Invocation, ServerConfig};

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<ServerConfig, String> {
    let mut all = vec!["--id", "1", "--data-dir", "unused"];
    all.extend_from_slice(args);
    let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match parse_args(&all, &lookup) {
        Ok(Invocation::Run(c)) => Ok(*c),
        Ok(_) => Err("not a run".into()),
        Err(e) => Err(e.message),
    }
}

#[test]
fn watch_defaults_need_no_flag_and_each_flag_is_taken() {
    // Goal: the defaults (100,000 changes, 64 MiB, 8 MiB, 1 s, 1 ms), and every flag parsed
    // with its units; the environment works as for every flag.
    let d = parse(&[], &[]).unwrap().watch;
    assert_eq!(d.history.max_changes, 100_000);
    assert_eq!(d.history.max_bytes, 64 << 20);
    assert_eq!(d.buffer_bytes, 8 << 20);
    assert_eq!(d.progress_interval, Duration::from_secs(1));
    assert_eq!(d.frame_interval, Duration::from_millis(1));
    assert_eq!(d, zatt::host::WatchConfig::default());
    let c = parse(
        &[
            "--watch-history-changes",
            "500",
            "--watch-history-bytes",
            "1MiB",
            "--watch-buffer-bytes",
            "256KiB",
            "--watch-progress-interval",
            "250ms",
            "--watch-frame-interval",
            "0",
        ],
        &[],
    )
    .unwrap()
    .watch;
    assert_eq!(c.history.max_changes, 500);
    assert_eq!(c.history.max_bytes, 1 << 20);
    assert_eq!(c.buffer_bytes, 256 << 10);
    assert_eq!(c.progress_interval, Duration::from_millis(250));
    assert_eq!(c.frame_interval, Duration::ZERO);
    let e = parse(&[], &[("ZATT_WATCH_HISTORY_CHANGES", "7")]).unwrap();
    assert_eq!(e.watch.history.max_changes, 7);
}

#[test]
fn watch_settings_are_taken_from_a_config_file_below_the_environment_and_flags() {
    // Goal: the watch settings work as config-file lines like every setting, with the
    // documented precedence: a flag beats the environment, which beats the file.
    let dir = temp_dir("watchconf");
    let file = write_file(
        &dir,
        "zattd.conf",
        b"watch-history-changes = 300\nwatch-history-bytes = 2MiB\n\
          watch-buffer-bytes = 128KiB\nwatch-progress-interval = 500ms\n\
          watch-frame-interval = 2ms\n",
    );
    let file = file.display().to_string();
    let c = parse(&["--config", &file], &[]).unwrap().watch;
    assert_eq!(c.history.max_changes, 300);
    assert_eq!(c.history.max_bytes, 2 << 20);
    assert_eq!(c.buffer_bytes, 128 << 10);
    assert_eq!(c.progress_interval, Duration::from_millis(500));
    assert_eq!(c.frame_interval, Duration::from_millis(2));
    let c = parse(
        &["--config", &file, "--watch-history-changes", "9"],
        &[
            ("ZATT_WATCH_HISTORY_CHANGES", "8"),
            ("ZATT_WATCH_BUFFER_BYTES", "64KiB"),
        ],
    )
    .unwrap()
    .watch;
    assert_eq!(c.history.max_changes, 9, "the flag wins");
    assert_eq!(c.buffer_bytes, 64 << 10, "the environment beats the file");
    assert_eq!(c.history.max_bytes, 2 << 20, "the file beats the default");
    let bad = write_file(&dir, "bad.conf", b"watch-buffer-bytes = lots\n");
    let err = parse(&["--config", &bad.display().to_string()], &[]).unwrap_err();
    assert!(err.contains("watch-buffer-bytes"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_watch_values_are_usage_errors_naming_the_flag() {
    // Goal: nonsense is refused at start, naming the flag, rather than taken.
    for (flag, value) in [
        ("--watch-history-changes", "-1"),
        ("--watch-history-changes", "many"),
        ("--watch-history-bytes", "12XB"),
        ("--watch-buffer-bytes", "1KiB"),
        ("--watch-progress-interval", "1ms"),
        ("--watch-progress-interval", "2h"),
        ("--watch-frame-interval", "5s"),
        ("--watch-frame-interval", "soon"),
    ] {
        let err = parse(&[flag, value], &[]).expect_err(&format!("{flag} {value} accepted"));
        assert!(err.contains(&flag[2..]), "{flag} {value}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn zattd_help_documents_the_watch_flags() {
    // Goal: a user finds the flags in `zattd --help`, with their defaults.
    let help = zatt::config::usage();
    for (flag, default) in [
        ("--watch-history-changes N", "100000"),
        ("--watch-history-bytes BYTES", "64MiB"),
        ("--watch-buffer-bytes BYTES", "8MiB"),
        ("--watch-progress-interval DUR", "1s"),
        ("--watch-frame-interval DUR", "1ms"),
    ] {
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} not in --help"));
        let rest = &help[at..];
        let end = rest[1..].find("\n  --").map_or(rest.len(), |i| i + 1);
        assert!(
            rest[..end].contains(&format!("[default: {default}]")),
            "{flag}: {}",
            &rest[..end]
        );
    }
}
