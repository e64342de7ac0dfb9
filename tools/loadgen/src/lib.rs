//! Zatt's load generator as a library, so that its tests reach the parts the binary glues
//! together. `args` parses the command line, `driver` runs the load (mio, pipelined, closed or
//! open loop), `hist` keeps latencies, `report` prints them, `probe` measures the machine,
//! `failover` kills leaders and times the recovery, `svg` draws the result, `merge` combines runs
//! from several machines. The binary is
//! `main.rs`; the scripts that call it are in `perf/`.

pub mod args;
pub mod blocking;
pub mod cluster;
pub mod cpu;
pub mod driver;
pub mod failover;
pub mod hist;
pub mod merge;
pub mod probe;
pub mod report;
pub mod svg;
pub mod tls;
