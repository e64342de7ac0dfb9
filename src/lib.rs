//! Zatt: a Raft-replicated key→value dictionary.
//!
//! Read `README.md` for the tour, `docs/ARCHITECTURE.md` for how the parts fit, and the `//!`
//! paragraph at the top of each module for what it owns: `raft` (the protocol, pure), `kv` (the
//! replicated dictionary), `host` (one server node: raft and kv driven by events, the
//! persistence contract, client requests), `event_loop` (the server's I/O, driving a host),
//! `wal` (durable bytes), `wire` (every byte format on a network), `client` (the library
//! applications use), `metrics` (the Prometheus text format), `sim` (the deterministic cluster
//! simulator, driving the same host).

pub mod bootstrap;
pub mod bytes;
pub mod cli;
pub mod client;
pub mod config;
pub mod event_loop;
pub mod files;
pub mod host;
pub mod kv;
pub mod lincheck;
pub mod metrics;
pub mod raft;
pub mod rng;
pub mod sim;
pub mod snapdata;
pub mod storage;
pub mod types;
pub mod wal;
pub mod wire;
