//! Every byte format that crosses a network: the peer datagrams between servers (`peer`) and
//! the client frames between applications and servers (`client`). Encoders append to buffers
//! the caller owns or the codec reuses; decoders check every length against the bytes present
//! and the configured limits before they allocate, and never panic on any input.
//! Must not: know Raft's or the dictionary's rules, touch sockets or clocks, or trust a length
//! it has not checked. DESIGN.md §3 gives the contracts these formats serve; the tests in
//! `tests/wire_*.rs` pin them (round trips, fragmentation, drops by reason, hostile input).
//!
//! All integers are little-endian. "bytes" below means a `u32` length followed by that many
//! bytes; "opt X" means a `u8` tag (0 absent, 1 present; anything else refused) followed by X
//! when present; "bool" is a `u8` that must be 0 or 1.
//!
//! # Peer datagrams (`peer`)
//!
//! One UDP datagram:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0x5A 0x74` ("Zt") |
//! | 2 | 1 | version, 1 |
//! | 3 | 1 | flags: bit 0 = a tag follows the body; other bits must be 0 |
//! | 4 | 8 | cluster id |
//! | 12 | 8 | from: sender's `NodeId` |
//! | 20 | 8 | to: receiver's `NodeId` |
//! | 28 | 8 | message id: a per-sender counter, shared by a message's fragments |
//! | 36 | 2 | fragment index, `0..count` |
//! | 38 | 2 | fragment count, ≥ 1 |
//! | 40 | 4 | body length: must equal the datagram's length − 44 − tag length |
//! | 44 | n | body (a whole message body, or one fragment of it) |
//! | 44+n | 32 | when a cluster secret is configured: HMAC-SHA256(secret, bytes 0..44+n) |
//!
//! Checks, in this order; the first that fails drops the datagram and counts it under the
//! named `DropReason`: length ≥ 44 (`TooShort`); magic (`BadMagic`); version (`BadVersion`);
//! unknown flag bits (`BadFlags`); tag flag against the local configuration (`MissingTag`,
//! `UnexpectedTag`); length ≥ 44 + tag (`TooShort`); body length field (`BadLength`); cluster
//! id (`WrongCluster`); `to` is this node (`NotForMe`); `from` is neither 0 nor this node
//! (`BadSender`); the tag, compared in constant time (`BadTag`); fragment index < count,
//! count ≥ 1, no empty fragment of a multi-fragment message (`BadFragment`). Only then is the
//! body looked at. The tag authenticates but does not prevent replay: Raft tolerates duplicated
//! and delayed messages by design.
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
//! | 2 | PreVoteResponse | granted bool |
//! | 3 | RequestVote | last_log_index u64, last_log_term u64, transfer bool |
//! | 4 | RequestVoteResponse | granted bool |
//! | 5 | AppendEntries | prev_log_index u64, prev_log_term u64, leader_commit u64, read_seq u64, count u32, then per entry: term u64, index u64, kind u8 (0 noop, 1 normal, 2 config), data bytes |
//! | 6 | AppendEntriesResponse | success bool, match_index u64, conflict_term u64, conflict_index u64, last_index u64, read_seq u64 |
//! | 7 | InstallSnapshot | index u64, term u64, membership (`Membership::encode`), offset u64, total u64, done bool, data bytes |
//! | 8 | InstallSnapshotResponse | snapshot_index u64, next_offset u64, installed bool |
//! | 9 | TimeoutNow | — |
//!
//! The entry count is refused unless count × 21 (the smallest entry) ≤ the bytes left, before
//! the entry vector is allocated; bytes left over after the last field are refused
//! (`BadBody`).
//!
//! # Client frames (`client`)
//!
//! A TCP (or TLS) stream of frames, each: `len: u32` (the bytes after this field, ≥ 9),
//! `request_id: u64`, `opcode: u8`, body. A response carries its request's id; a connection
//! may have many requests in flight and responses may come back in any order.
//!
//! `split_frame` checks, in order: 4 bytes present (else wait); `len ≥ 9` (else `Malformed`:
//! the stream cannot be resynchronised, close it); 13 header bytes present (else wait);
//! `len + 4 ≤ max_frame_bytes` (else `TooLarge{what: "frame"}`, with the request id readable so
//! the server can answer it and skip the frame's bytes, or close); the whole frame present
//! (else wait). The decoders then check the length field against the frame, the opcode, each
//! field against the bytes left, keys (and scan prefixes) against `max_key_bytes` and values
//! against `max_value_bytes` (`TooLarge{what: "key" | "value"}`), every collection's count
//! against the bytes left, and that nothing trails.
//!
//! Requests (opcode: body):
//!
//! | op | request | body |
//! |---|---|---|
//! | 1 | RegisterSession | — |
//! | 2 | Get | consistency u8 (0 linearizable, 1 stale), key bytes |
//! | 3 | Put | session, key bytes, value bytes |
//! | 4 | Delete | session, key bytes |
//! | 5 | Cas | session, key bytes, expect (u8 0 + value bytes / 1 absent / 2 + revision u64), new opt bytes |
//! | 6 | Scan | consistency u8, limit u32, prefix bytes, start_after opt bytes |
//! | 7 | Len | consistency u8 |
//! | 8 | Status | — |
//! | 9 | Members | — |
//! | 10 | MemberAdd | id u64, learner bool, addr bytes (UTF-8, ≤ 255) |
//! | 11 | MemberPromote | id u64 |
//! | 12 | MemberRemove | id u64 |
//! | 13 | TransferLeader | to opt u64 |
//!
//! where session is opt (session id u64, sequence u64).
//!
//! Responses:
//!
//! | op | response | body |
//! |---|---|---|
//! | 0x81 | SessionRegistered | id u64 |
//! | 0x82 | Value | revision u64, applied_index u64, value opt bytes |
//! | 0x83 | Written | revision u64 |
//! | 0x84 | Deleted | revision u64, existed bool |
//! | 0x85 | CasOk | revision u64 |
//! | 0x86 | CasFailed | current opt (revision u64, value bytes) |
//! | 0x87 | ScanPage | applied_index u64, more bool, count u32, then per item: revision u64, key bytes, value bytes |
//! | 0x88 | Len | len u64, applied_index u64 |
//! | 0x89 | Status | id u64, role text, term u64, leader opt u64, leader_addr opt text, commit_index u64, applied_index u64, last_index u64, members (count u32, each: id u64, addr text, voter bool), peers (count u32, each: id u64, match_index u64, lag u64, snapshot_progress opt (done u64, total u64)), wal_bytes u64, fsync_p50_us u64, fsync_p99_us u64, dropped_datagrams (count u32, each: name text, count u64), sessions u64, keys u64, pid u32 (the server's process id; 0 when unknown) |
//! | 0x8A | Members | count u32, each: id u64, addr text, voter bool |
//! | 0x8B | Done | — |
//! | 0x8C | Error | error kind u8 and its fields: 1 NotLeader (leader opt u64, leader_addr opt text), 2 TooLarge (what text, limit u64), 3 Busy, 4 TooManyInFlight (limit u64), 5 TooManyConnections (limit u64), 6 SessionExpired, 7 StaleRequest, 8 Timeout, 9 Unavailable (text), 10 Invalid (text), 11 ConfChange (text), 12 ShuttingDown |
//!
//! "text" is bytes holding UTF-8, at most 1024 bytes (255 for addresses); encoders cut longer
//! text at a character boundary so that what they send always decodes.

pub mod client;
pub mod peer;
