//! Every byte format that crosses a network: the peer datagrams between servers (`peer`) and
//! the client frames between applications and servers (`client`). Encoders append to buffers
//! the caller owns or the codec reuses; decoders check every length against the bytes present
//! and the configured limits before they allocate, and never panic on any input.
//! Must not: know Raft's or the dictionary's rules, touch sockets or clocks, or trust a length
//! it has not checked. `docs/ARCHITECTURE.md` says what these formats serve; the tests in
//! `tests/wire_*.rs` pin them (round trips, fragmentation, drops by reason, hostile input).
//!
//! All integers are little-endian. "bytes" below means a `u32` length followed by that many
//! bytes; "bool" is a `u8` that must be 0 or 1.
//!
//! # Peer datagrams (`peer`)
//!
//! One UDP datagram:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0x5A 0x74` ("Zt") |
//! | 2 | 1 | version, 3 |
//! | 3 | 1 | flags: bit 0 = a tag follows the body; other bits must be 0 |
//! | 4 | 8 | cluster id |
//! | 12 | 8 | from: sender's `NodeId` |
//! | 20 | 8 | to: receiver's `NodeId` |
//! | 28 | 8 | from incarnation: the random id of the sender's data directory (0: none) |
//! | 36 | 8 | to incarnation: the receiver's data directory as the sender knows it (0: unknown) |
//! | 44 | 8 | message id: a per-sender counter, shared by a message's fragments |
//! | 52 | 2 | fragment index, `0..count` |
//! | 54 | 2 | fragment count, ≥ 1 |
//! | 56 | 4 | body length: must equal the datagram's length − 60 − tag length |
//! | 60 | n | body (a whole message body, or one fragment of it) |
//! | 60+n | 32 | when a cluster secret is configured: HMAC-SHA256(secret, bytes 0..60+n) |
//!
//! Checks, in this order; the first that fails drops the datagram and counts it under the
//! named `DropReason`: length ≥ 60 (`TooShort`); magic (`BadMagic`); version (`BadVersion`);
//! unknown flag bits (`BadFlags`); tag flag against the local configuration (`MissingTag`,
//! `UnexpectedTag`); length ≥ 60 + tag (`TooShort`); body length field (`BadLength`); cluster
//! id (`WrongCluster`); `to` is this node (`NotForMe`); `from` is neither 0 nor this node
//! (`BadSender`); the tag, compared in constant time (`BadTag`); fragment index < count,
//! count ≥ 1, no empty fragment of a multi-fragment message (`BadFragment`). Only then is the
//! body looked at. The tag authenticates but does not prevent replay: Raft tolerates duplicated
//! and delayed messages by design.
//!
//! Incarnations: a server is known by (node id, incarnation), the incarnation being drawn at
//! random when its data directory is created. The codec only carries them: `Inbound::Raft`
//! hands the receiver both, and the host decides (`host/peers.rs`): a message naming another
//! incarnation of the receiver (`NotMyIncarnation`), or from another incarnation of a pinned
//! sender (`IncarnationChanged`), is dropped and counted. A sender writes the incarnation it
//! pinned for the receiver (`PeerCodec::pin`), 0 before that. Probes carry the incarnation the
//! sender knows the receiver by in the same field.
//!
//! A body larger than `max_datagram − 44 − tag` is cut into fragments of exactly that size
//! (the last one shorter), each a full datagram with its own envelope and tag. The receiver
//! keys partial messages by (from, message id) and refuses, before storing anything: a
//! non-last fragment whose length × count exceeds `max_message_bytes` (`TooLarge`), a fragment
//! disagreeing with earlier ones on count or length (`BadFragment`). It holds at most
//! `max_partial_messages` partials per sender (a new one evicts that sender's oldest,
//! `ReassemblyFull`) and `max_reassembly_bytes` in all (oldest partials evicted first); a partial
//! not completed within `reassembly_timeout_ticks` of its first fragment is dropped by
//! `expire` (`Stale`). Duplicate fragments are ignored.
//!
//! The body (everything in a `Message` but `from` and `to`, which the envelope carries):
//! `term: u64`, `kind: u8`, then by kind:
//!
//! | kind | message | fields |
//! |---|---|---|
//! | 1 | PreVote | last_log_index u64, last_log_term u64 |
//! | 2 | PreVoteResponse | granted bool, last_log_index u64, last_log_term u64 (the responder's log), voter bool (the responder may campaign) |
//! | 3 | RequestVote | last_log_index u64, last_log_term u64, transfer bool |
//! | 4 | RequestVoteResponse | granted bool |
//! | 5 | AppendEntries | prev_log_index u64, prev_log_term u64, leader_commit u64, read_seq u64, count u32, then per entry: term u64, index u64, kind u8 (0 noop, 1 normal, 2 config), data bytes |
//! | 6 | AppendEntriesResponse | success bool, match_index u64, conflict_term u64, conflict_index u64, last_index u64, read_seq u64 |
//! | 7 | InstallSnapshot | index u64, term u64, membership (`Membership::encode`), offset u64, total u64, done bool, data bytes |
//! | 8 | InstallSnapshotResponse | snapshot_index u64, next_offset u64, installed bool |
//! | 9 | TimeoutNow | — |
//! | 10 | Probe (not Raft: a server with an empty data directory asks whether it is known) | member bool |
//! | 11 | ProbeReply | member bool |
//!
//! In a probe or its reply, `term` is 0, `member` says whether the sender is a running member
//! of a cluster (false: it is itself still asking), and the envelope's incarnations say who the
//! sender is and what it knows the receiver by.
//!
//! The entry count is refused unless count × 21 (the smallest entry) ≤ the bytes left, before
//! the entry vector is allocated; bytes left over after the last field are refused
//! (`BadBody`).
//!
//! # Client frames (`client`)
//!
//! The client protocol (frames, every request and response, errors, sessions and the
//! exactly-once rule, `NotLeader` redirection, limits, TLS, and golden frames) is specified in
//! `docs/PROTOCOL.md`, for client authors in any language; `tests/protocol_doc.rs` decodes and
//! re-encodes that document's golden frames with this codec so that the two cannot drift apart.

pub mod client;
pub mod peer;
