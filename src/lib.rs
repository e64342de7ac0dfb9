//! Zatt: a Raft-replicated key→value dictionary.
//!
//! Read `README.md` for the tour and the guarantees, and the `//!` paragraph at the top of each
//! module for what it owns: `raft` (the protocol, pure), `wal` (durable bytes), `wire` (every
//! byte format on a network), `kv` (the replicated dictionary), `event_loop` and `client_conn`
//! (the server's I/O), `client` (the library applications use), `sim` (the deterministic
//! cluster simulator that checks Raft's safety properties).

pub mod bootstrap;
pub mod bytes;
pub mod cli;
pub mod client;
pub mod client_conn;
pub mod config;
pub mod event_loop;
pub mod kv;
pub mod lincheck;
pub mod raft;
pub mod rng;
pub mod server;
pub mod sim;
pub mod storage;
pub mod timer;
pub mod types;
pub mod wal;
pub mod wire;
