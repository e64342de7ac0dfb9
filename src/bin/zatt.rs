//! The `zatt` command line: talks to a Zatt cluster, or runs a local one with `zatt dev`.
//! Holds no logic: everything lives in `zatt::cli` where tests reach it. See `README.md`.

fn main() {
    std::process::exit(zatt::cli::main());
}
