//! The README's "Every flag, as `zattd --help` prints it" block is what `zattd --help` prints,
//! line for line: a flag added, renamed or given a new default must show there too.

use std::process::Command;

#[test]
fn the_readme_shows_zattd_help_as_it_prints() {
    let o = Command::new(env!("CARGO_BIN_EXE_zattd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success());
    let help = String::from_utf8(o.stdout).unwrap();
    let block: String = help
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    let readme = include_str!("../README.md");
    assert!(
        readme.contains(&format!(
            "Every flag, as `zattd --help` prints it:\n\n{block}"
        )),
        "README.md's copy of `zattd --help` differs from the binary's; paste this in:\n{block}"
    );
}
