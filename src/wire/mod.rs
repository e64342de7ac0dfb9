//! Every byte format that crosses a network: the peer datagrams between servers (`peer`) and
//! the client frames between applications and servers (`client`). Encoders write into buffers
//! the caller owns or the codec reuses; decoders check every length against the bytes present
//! and the configured limits before they allocate, and never panic on any input.
//! Must not: know Raft's rules, touch sockets, or trust a length it has not checked.
//! The formats are specified below; DESIGN.md §3 gives the contracts they serve.
//!
//! All integers are little-endian.
//!
//! (Format specification: see the sections below, filled in with the codecs.)

pub mod client;
pub mod peer;
