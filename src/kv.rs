//! The replicated dictionary: the state machine every replica builds by applying committed log
//! entries in index order. Owns the key→value map with per-key revisions, client sessions for
//! exactly-once writes (Raft thesis §6.3), the proposal byte format, and the snapshot format.
//! Must not depend on the network, the disk or any clock: its only time is the `now_ms` carried
//! in proposals, so every replica that applies the same entries reaches the same state, byte for
//! byte. No hash-map iteration order may reach a result: the dictionary (`kv/dict.rs`) keeps
//! each key once, with its value, in one record reached from a hash index for point lookups and
//! writes (the hot path of every replica) and from an ordered index that every ordered walk
//! (scan, iteration, snapshot) goes through.
//! Read more: `docs/ARCHITECTURE.md` (the path of a write), thesis §6.3 (sessions).
//!
//! # Changes (for watches)
//! [`Kv::apply_observed`] reports every change an entry makes to the dictionary — a key set, or
//! a key that existed deleted — to the caller, in the order made; a write that changes nothing
//! (a failed compare-and-swap, a delete of an absent key, a retried write answered from its
//! session) reports nothing. The bounded record of recent changes watches are served from is
//! [`history::History`], kept by the host beside the dictionary: it is a replica's own memory,
//! not replicated state (not in snapshots, not compared between replicas).
//!
//! # Revisions
//! Every key carries the log index of the entry that last changed it. Replies carry the index
//! of the entry that produced them. `Expect::Revision(0)` matches an absent key, as
//! no entry has index 0.
//!
//! # Sessions (exactly-once writes)
//! `RegisterSession` creates a session whose id is the log index of its entry. A write that
//! names a session `{id, seq}`:
//! - unknown or expired id → `SessionExpired` (the client must register again);
//! - `seq == last applied seq` → the cached reply of that write, nothing applied again;
//! - `seq < last applied seq` → `StaleRequest`;
//! - `seq > last applied seq` → applied, and its reply cached.
//!
//! Only the reply of the *last* write per session is kept. Clients therefore number their writes
//! with increasing `seq` (starting at 1; 0 is refused as `Invalid`) and keep **one write in flight
//! per session**: a client that pipelines writes uses one session per in-flight slot. Gaps in
//! `seq` are allowed. A `RegisterSession` that is retried creates a second session; the orphan
//! expires by itself.
//!
//! Expiry is decided by log-carried time only. The state machine's clock is the largest `now_ms`
//! of any applied proposal (a leader whose clock lags cannot move it back). A session idle for
//! longer than `session_ttl_ms` of that clock expires: on every applied proposal, after the clock
//! advances, sessions are swept oldest-first from an index ordered by (last activity, id), so
//! the sweep costs only the sessions it removes. When registering would exceed `max_sessions`,
//! the least recently active session (ties: the lowest id) is evicted. Any access through a
//! session (including a duplicate or stale one) counts as activity.
//!
//! All replicas must run with the same `KvConfig`: limits and the TTL are part of the
//! deterministic state machine.
//!
//! # Proposal layout (an entry's `data` for `EntryKind::Normal`; integers little-endian)
//! ```text
//! version  u8   = 1
//! flags    u8   bit 0: session present; other bits must be 0
//! [session_id u64, seq u64]          if bit 0
//! now_ms   u64  the proposer's clock when the leader accepted the proposal
//! op       u8   1 Put, 2 Delete, 3 Cas, 4 RegisterSession
//! Put:     key (u32 len + bytes), value (u32 len + bytes)
//! Delete:  key
//! Cas:     key, expect u8 (0 value: then value; 1 absent; 2 revision: then u64),
//!          new u8 (0 none = delete; 1 some: then value)
//! RegisterSession: nothing, and it must not carry a session
//! ```
//! Keys are limited to `max_key_bytes`, values to `max_value_bytes`; every length is checked
//! against the limit and the bytes present before anything is allocated; trailing bytes are
//! refused.
//!
//! # Snapshot layout (integers little-endian)
//! ```text
//! magic    4 bytes "ZKVS"
//! version  u8   = 1
//! applied  u64  the applied index the snapshot stands for
//! clock_ms u64  the state machine's clock
//! keys     u64  count, then per key in ascending key order:
//!               key (u32 len + bytes), value (u32 len + bytes), revision u64
//! sessions u64  count, then per session in ascending id order:
//!               id u64, last_seq u64, last_active_ms u64, reply u8 (0 none, 1 some: then reply)
//! crc32    u32  CRC-32 (IEEE) of every byte before it
//! ```
//! A cached reply is one of: 1 Put{revision u64}, 2 Deleted{revision u64, existed u8},
//! 3 CasOk{revision u64}, 4 CasFailed{present u8, [value (u32 len + bytes), revision u64]}.
//! `restore` checks the CRC first, then parses with every length checked, refuses keys or
//! session ids out of order, revisions beyond the applied index, and trailing bytes.

pub mod history;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

mod dict;
mod ordered;
mod slab;
use dict::Dict;

use crate::bytes::{le_u32, PutLe};
use crate::types::{DecodeError, Entry, EntryKind, LogIndex, Reader};
use crate::wire::client::{ExpectView, RequestView};

/// The state machine's limits and session policy. Must be identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// A session idle longer than this (in log-carried time) expires.
    pub session_ttl_ms: u64,
    /// Registering beyond this many sessions evicts the least recently active one.
    pub max_sessions: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            session_ttl_ms: 10 * 60 * 1000,
            max_sessions: 100_000,
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

/// The condition of a compare-and-swap: the client's own type, so a decoded entry and a
/// request speak of it alike (`Revision(0)`: the key is absent).
pub use crate::wire::client::Expect;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Cas {
        key: Vec<u8>,
        expect: Expect,
        /// `None` deletes the key when the condition holds.
        new: Option<Vec<u8>>,
    },
    RegisterSession,
}

/// A write's place in its client's session: `seq` numbers the client's writes, from 1.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SessionRef {
    pub id: u64,
    pub seq: u64,
}

/// What a client asks the cluster to apply, as carried in a `Normal` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub session: Option<SessionRef>,
    /// The leader's clock when it accepted the proposal; the state machine's only time source.
    pub now_ms: u64,
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Put {
        revision: LogIndex,
    },
    Deleted {
        revision: LogIndex,
        existed: bool,
    },
    CasOk {
        revision: LogIndex,
    },
    /// The condition did not hold: the key's current value and revision, if present.
    CasFailed {
        current: Option<(Vec<u8>, LogIndex)>,
    },
    SessionRegistered {
        id: u64,
    },
    /// The session is unknown or has expired; the write was not applied.
    SessionExpired,
    /// The write's `seq` is below the session's last applied one; it was not applied.
    StaleRequest,
    /// The entry's payload could not be decoded or breaks a rule; nothing was applied.
    Invalid(&'static str),
}

const PROPOSAL_VERSION: u8 = 1;
const FLAG_SESSION: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_CAS: u8 = 3;
const OP_REGISTER: u8 = 4;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.extend_from_slice(b);
}

/// Appends an encoded proposal for a client's write to `out` (layout at the top of this file),
/// straight from the request as the wire decoder borrowed it from its frame: the server's write
/// path copies a value once, from the socket buffer into the entry. `now_ms` is the leader's
/// clock. Returns false, appending nothing, when the request is not a write (a read, a status
/// or membership request).
pub fn encode_proposal(out: &mut Vec<u8>, now_ms: u64, write: &RequestView<'_>) -> bool {
    let session = match *write {
        RequestView::Put { session, .. }
        | RequestView::Delete { session, .. }
        | RequestView::Cas { session, .. } => session,
        RequestView::RegisterSession => None,
        _ => return false,
    };
    encode_head(out, session.map(|(id, seq)| SessionRef { id, seq }), now_ms);
    encode_op(out, write);
    true
}

/// The layout's version, flags, session and clock.
fn encode_head(out: &mut Vec<u8>, session: Option<SessionRef>, now_ms: u64) {
    out.push(PROPOSAL_VERSION);
    match session {
        Some(s) => {
            out.push(FLAG_SESSION);
            out.put_u64(s.id);
            out.put_u64(s.seq);
        }
        None => out.push(0),
    }
    out.put_u64(now_ms);
}

/// The layout's operation and its arguments; the view's session is the head's business.
fn encode_op(out: &mut Vec<u8>, write: &RequestView<'_>) {
    match *write {
        RequestView::Put { key, value, .. } => {
            out.push(OP_PUT);
            put_bytes(out, key);
            put_bytes(out, value);
        }
        RequestView::Delete { key, .. } => {
            out.push(OP_DELETE);
            put_bytes(out, key);
        }
        RequestView::Cas {
            key, expect, new, ..
        } => {
            out.push(OP_CAS);
            put_bytes(out, key);
            match expect {
                ExpectView::Value(v) => {
                    out.push(0);
                    put_bytes(out, v);
                }
                ExpectView::Absent => out.push(1),
                ExpectView::Revision(r) => {
                    out.push(2);
                    out.put_u64(r);
                }
            }
            match new {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    put_bytes(out, v);
                }
            }
        }
        RequestView::RegisterSession => out.push(OP_REGISTER),
        _ => unreachable!("encode_proposal and Proposal::encode pass writes only"),
    }
}

impl Command {
    /// This command as the borrowed request the encoder takes (without a session: a
    /// proposal's session is encoded apart, so that even a registration naming one, which
    /// `decode` refuses, can be written for tests).
    pub fn view(&self) -> RequestView<'_> {
        match self {
            Command::Put { key, value } => RequestView::Put {
                session: None,
                key,
                value,
            },
            Command::Delete { key } => RequestView::Delete { session: None, key },
            Command::Cas { key, expect, new } => RequestView::Cas {
                session: None,
                key,
                expect: match expect {
                    Expect::Value(v) => ExpectView::Value(v),
                    Expect::Absent => ExpectView::Absent,
                    Expect::Revision(r) => ExpectView::Revision(*r),
                },
                new: new.as_deref(),
            },
            Command::RegisterSession => RequestView::RegisterSession,
        }
    }
}

impl Proposal {
    /// Appends the encoded proposal to `out` (layout at the top of this file).
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_head(out, self.session, self.now_ms);
        encode_op(out, &self.command.view());
    }

    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Decodes a whole proposal; never panics, never allocates more than the limits allow.
    pub fn decode(buf: &[u8], limits: &KvConfig) -> Result<Proposal, DecodeError> {
        let (session, now_ms, op) = decode_view(buf, limits)?;
        let command = match op {
            RequestView::Put { key, value, .. } => Command::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            RequestView::Delete { key, .. } => Command::Delete { key: key.to_vec() },
            RequestView::Cas {
                key, expect, new, ..
            } => Command::Cas {
                key: key.to_vec(),
                expect: match expect {
                    ExpectView::Value(v) => Expect::Value(v.to_vec()),
                    ExpectView::Absent => Expect::Absent,
                    ExpectView::Revision(r) => Expect::Revision(r),
                },
                new: new.map(|v| v.to_vec()),
            },
            _ => Command::RegisterSession,
        };
        Ok(Proposal {
            session,
            now_ms,
            command,
        })
    }
}

/// Decodes a proposal in place: its session, clock and operation, the operation's key and
/// values borrowed from `buf` (the apply path of every replica copies a value only into the
/// dictionary). The operation is a write `RequestView` without a session (the session is the
/// first element); never panics, checks every length against the limits and the bytes present.
fn decode_view<'a>(
    buf: &'a [u8],
    limits: &KvConfig,
) -> Result<(Option<SessionRef>, u64, RequestView<'a>), DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != PROPOSAL_VERSION {
        return Err(DecodeError::new("unknown proposal version"));
    }
    let flags = r.u8()?;
    if flags & !FLAG_SESSION != 0 {
        return Err(DecodeError::new("unknown proposal flags"));
    }
    let session = if flags & FLAG_SESSION != 0 {
        Some(SessionRef {
            id: r.u64()?,
            seq: r.u64()?,
        })
    } else {
        None
    };
    let now_ms = r.u64()?;
    let key = |r: &mut Reader<'a>| r.len_prefixed(limits.max_key_bytes);
    let value = |r: &mut Reader<'a>| r.len_prefixed(limits.max_value_bytes);
    let op = match r.u8()? {
        OP_PUT => RequestView::Put {
            session: None,
            key: key(&mut r)?,
            value: value(&mut r)?,
        },
        OP_DELETE => RequestView::Delete {
            session: None,
            key: key(&mut r)?,
        },
        OP_CAS => {
            let k = key(&mut r)?;
            let expect = match r.u8()? {
                0 => ExpectView::Value(value(&mut r)?),
                1 => ExpectView::Absent,
                2 => ExpectView::Revision(r.u64()?),
                _ => return Err(DecodeError::new("unknown cas condition")),
            };
            let new = match r.u8()? {
                0 => None,
                1 => Some(value(&mut r)?),
                _ => return Err(DecodeError::new("unknown cas new-value tag")),
            };
            RequestView::Cas {
                session: None,
                key: k,
                expect,
                new,
            }
        }
        OP_REGISTER => {
            if session.is_some() {
                return Err(DecodeError::new("session registration names a session"));
            }
            RequestView::RegisterSession
        }
        _ => return Err(DecodeError::new("unknown proposal operation")),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::new("trailing bytes after proposal"));
    }
    Ok((session, now_ms, op))
}

/// One `scan` result: key, value, revision.
pub type ScanEntry = (Vec<u8>, Vec<u8>, LogIndex);

/// One change an applied entry made: `key` set to `value`, or deleted (`value` is `None`), by
/// the entry at `revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    pub revision: LogIndex,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl<'a> Change<'a> {
    fn new(revision: LogIndex, key: &'a [u8], value: Option<&'a [u8]>) -> Change<'a> {
        Change {
            revision,
            key,
            value,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    /// The highest `seq` applied through this session (0: none yet).
    last_seq: u64,
    /// The state machine's clock at this session's last access; always `<= Kv::clock_ms`.
    last_active_ms: u64,
    /// The reply to the write numbered `last_seq`; `None` until the first write.
    reply: Option<Reply>,
}

/// The dictionary and its sessions. Invariants: every revision is `<= applied`; `by_activity`
/// holds exactly one `(last_active_ms, id)` per session; `sessions.len() <= cfg.max_sessions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    cfg: KvConfig,
    data: Dict,
    sessions: BTreeMap<u64, Session>,
    /// Sessions ordered by last activity, then id: the expiry sweep and LRU eviction walk it.
    by_activity: BTreeSet<(u64, u64)>,
    applied: LogIndex,
    clock_ms: u64,
}

/// A snapshot encoding in progress (see `Kv::snapshot_start`).
#[derive(Debug)]
pub struct SnapshotEncoder {
    out: Vec<u8>,
    /// The last key encoded so far.
    after: Option<Vec<u8>>,
    done: bool,
    applied: LogIndex,
}

impl Kv {
    pub fn new(cfg: KvConfig) -> Kv {
        Kv {
            cfg,
            data: Dict::default(),
            sessions: BTreeMap::new(),
            by_activity: BTreeSet::new(),
            applied: LogIndex(0),
            clock_ms: 0,
        }
    }

    /// Applies one committed entry. `Normal` entries produce a reply; `Noop` and `Config`
    /// entries only advance the applied index. Entries must arrive in index order.
    pub fn apply(&mut self, entry: &Entry) -> Option<Reply> {
        self.apply_observed(entry, &mut |_| {})
    }

    /// Starts loading into the cache what applying `entry` will touch in the dictionary (see
    /// `Dict::prefetch`), so that applying a batch waits for its records together rather than
    /// one after the other. Changes nothing; an entry that does not decode is left alone.
    pub fn prefetch(&self, entry: &Entry) {
        if entry.kind != EntryKind::Normal {
            return;
        }
        if let Ok((
            _,
            _,
            RequestView::Put { key, .. }
            | RequestView::Delete { key, .. }
            | RequestView::Cas { key, .. },
        )) = decode_view(&entry.data, &self.cfg)
        {
            self.data.prefetch(key);
        }
    }

    /// [`Kv::apply`], telling `on_change` each change the entry makes (see "Changes" above).
    pub fn apply_observed(
        &mut self,
        entry: &Entry,
        on_change: &mut dyn FnMut(Change<'_>),
    ) -> Option<Reply> {
        assert!(
            entry.index == self.applied.next(),
            "kv: entry {:?} applied out of order: applied index is {:?}, expected {:?}",
            entry.index,
            self.applied,
            self.applied.next()
        );
        self.applied = entry.index;
        match entry.kind {
            EntryKind::Noop | EntryKind::Config => None,
            EntryKind::Normal => Some(match decode_view(&entry.data, &self.cfg) {
                Ok((session, now_ms, op)) => {
                    self.apply_proposal(entry.index, session, now_ms, op, on_change)
                }
                Err(e) => Reply::Invalid(e.what),
            }),
        }
    }

    fn apply_proposal(
        &mut self,
        index: LogIndex,
        session: Option<SessionRef>,
        now_ms: u64,
        op: RequestView<'_>,
        on_change: &mut dyn FnMut(Change<'_>),
    ) -> Reply {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.expire_idle_sessions();
        let Some(s) = session else {
            return match op {
                RequestView::RegisterSession => self.register_session(index),
                op => self.apply_command(index, op, on_change),
            };
        };
        if s.seq == 0 {
            return Reply::Invalid("session seq 0 is reserved");
        }
        let Some(session) = self.sessions.get(&s.id) else {
            return Reply::SessionExpired;
        };
        let last_seq = session.last_seq;
        if s.seq < last_seq {
            self.touch(s.id);
            return Reply::StaleRequest;
        }
        if s.seq == last_seq {
            // `last_seq > 0` here, so a write was applied and its reply cached.
            let cached = session.reply.clone();
            self.touch(s.id);
            return cached.unwrap_or(Reply::StaleRequest);
        }
        self.touch(s.id);
        let reply = self.apply_command(index, op, on_change);
        let session = self.sessions.get_mut(&s.id).expect("session touched above");
        session.last_seq = s.seq;
        session.reply = Some(reply.clone());
        reply
    }

    /// Applies a write decoded by `decode_view` (never a registration: that needs no key),
    /// telling `on_change` what it changed.
    fn apply_command(
        &mut self,
        index: LogIndex,
        op: RequestView<'_>,
        on_change: &mut dyn FnMut(Change<'_>),
    ) -> Reply {
        match op {
            RequestView::Put { key, value, .. } => {
                on_change(Change::new(index, key, Some(value)));
                self.data.insert(key, value, index);
                Reply::Put { revision: index }
            }
            RequestView::Delete { key, .. } => {
                let existed = self.data.remove(key);
                if existed {
                    on_change(Change::new(index, key, None));
                }
                Reply::Deleted {
                    revision: index,
                    existed,
                }
            }
            RequestView::Cas {
                key, expect, new, ..
            } => {
                let current = self.data.get(key);
                let holds = match (&expect, current) {
                    (ExpectView::Absent, None) => true,
                    (ExpectView::Value(v), Some((cv, _))) => *v == cv,
                    (ExpectView::Revision(r), Some((_, cr))) => *r == cr.0,
                    (ExpectView::Revision(r), None) => *r == 0,
                    _ => false,
                };
                if !holds {
                    return Reply::CasFailed {
                        current: current.map(|(v, r)| (v.to_vec(), r)),
                    };
                }
                match new {
                    Some(v) => {
                        on_change(Change::new(index, key, Some(v)));
                        self.data.insert(key, v, index);
                    }
                    None => {
                        // Deleting an absent key (expected absent) changes nothing.
                        if self.data.remove(key) {
                            on_change(Change::new(index, key, None));
                        }
                    }
                }
                Reply::CasOk { revision: index }
            }
            _ => Reply::Invalid("session registration names a session"),
        }
    }

    fn register_session(&mut self, index: LogIndex) -> Reply {
        while self.sessions.len() >= self.cfg.max_sessions.max(1) {
            let Some(&(_, id)) = self.by_activity.iter().next() else {
                break;
            };
            self.remove_session(id);
        }
        let id = index.0;
        self.sessions.insert(
            id,
            Session {
                last_seq: 0,
                last_active_ms: self.clock_ms,
                reply: None,
            },
        );
        self.by_activity.insert((self.clock_ms, id));
        Reply::SessionRegistered { id }
    }

    fn touch(&mut self, id: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            self.by_activity.remove(&(s.last_active_ms, id));
            s.last_active_ms = self.clock_ms;
            self.by_activity.insert((self.clock_ms, id));
        }
    }

    fn remove_session(&mut self, id: u64) {
        if let Some(s) = self.sessions.remove(&id) {
            self.by_activity.remove(&(s.last_active_ms, id));
        }
    }

    fn expire_idle_sessions(&mut self) {
        while let Some(&(active_ms, id)) = self.by_activity.iter().next() {
            if self.clock_ms.saturating_sub(active_ms) <= self.cfg.session_ttl_ms {
                break;
            }
            self.remove_session(id);
        }
    }

    pub fn applied_index(&self) -> LogIndex {
        self.applied
    }

    /// The state machine's clock: the largest `now_ms` of any applied proposal.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    pub fn config(&self) -> &KvConfig {
        &self.cfg
    }

    /// The value of `key` and its revision (the index of the entry that last changed it).
    pub fn get(&self, key: &[u8]) -> Option<(&[u8], LogIndex)> {
        self.data.get(key)
    }

    /// Up to `limit` entries whose key starts with `prefix` and sorts after `start_after`, in
    /// key order, and whether more such entries follow (pass the last key back as `start_after`).
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<ScanEntry>, bool) {
        let lower: Bound<&[u8]> = match start_after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut it = self
            .data
            .range(lower)
            .take_while(|(k, _, _)| k.starts_with(prefix));
        let mut out = Vec::new();
        for (k, v, r) in it.by_ref().take(limit) {
            out.push((k.to_vec(), v.to_vec(), r));
        }
        let more = it.next().is_some();
        (out, more)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Every entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8], LogIndex)> {
        self.data.iter()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The whole state (dictionary, sessions, clock, applied index) in the snapshot layout at the
    /// top of this file, ending with its CRC32.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut enc = self.snapshot_start();
        self.snapshot_step(&mut enc, usize::MAX);
        self.snapshot_finish(enc)
    }

    /// Begins a snapshot encoding that `snapshot_step` continues a slice at a time and
    /// `snapshot_finish` completes, so a host can spread a big dictionary over several turns of
    /// its loop instead of stalling it past an election timeout. Nothing may be applied between
    /// the start and the finish (the bytes describe one applied index).
    pub fn snapshot_start(&self) -> SnapshotEncoder {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.put_u64(self.applied.0);
        out.put_u64(self.clock_ms);
        out.put_u64(self.data.len() as u64);
        SnapshotEncoder {
            out,
            after: None,
            done: false,
            applied: self.applied,
        }
    }

    /// Encodes up to `max_keys` more keys (in key order); true once every key is in.
    pub fn snapshot_step(&self, enc: &mut SnapshotEncoder, max_keys: usize) -> bool {
        debug_assert_eq!(
            enc.applied, self.applied,
            "applied during a snapshot encoding"
        );
        if enc.done {
            return true;
        }
        let lower = match &enc.after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let mut last: Option<&[u8]> = None;
        let mut more = false;
        for (n, (k, v, r)) in self.data.range(lower).enumerate() {
            if n == max_keys {
                more = true;
                break;
            }
            put_bytes(&mut enc.out, k);
            put_bytes(&mut enc.out, v);
            enc.out.put_u64(r.0);
            last = Some(k);
        }
        if let Some(k) = last {
            enc.after = Some(k.to_vec());
        }
        enc.done = !more;
        enc.done
    }

    /// Completes an encoding whose keys are all in: the sessions, then the checksum.
    pub fn snapshot_finish(&self, enc: SnapshotEncoder) -> Vec<u8> {
        debug_assert!(enc.done, "snapshot_finish before every key was encoded");
        let mut out = enc.out;
        out.put_u64(self.sessions.len() as u64);
        for (id, s) in &self.sessions {
            out.put_u64(*id);
            out.put_u64(s.last_seq);
            out.put_u64(s.last_active_ms);
            match &s.reply {
                None => out.push(0),
                Some(reply) => {
                    out.push(1);
                    encode_cached_reply(reply, &mut out);
                }
            }
        }
        let crc = crc32fast::hash(&out);
        out.put_u32(crc);
        out
    }

    /// A CRC32 of the whole state, for comparing replicas cheaply.
    pub fn digest(&self) -> u32 {
        crc32fast::hash(&self.snapshot_bytes())
    }

    /// Rebuilds a state machine from `snapshot_bytes` output, refusing anything damaged.
    pub fn restore(bytes: &[u8], cfg: KvConfig) -> Result<Kv, DecodeError> {
        if bytes.len() < SNAPSHOT_MAGIC.len() + 1 + 4 {
            return Err(DecodeError::new("snapshot truncated"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let want = le_u32(crc, 0);
        if crc32fast::hash(body) != want {
            return Err(DecodeError::new("snapshot checksum mismatch"));
        }
        let mut r = Reader::new(body);
        if r.bytes(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return Err(DecodeError::new("snapshot magic is wrong"));
        }
        if r.u8()? != SNAPSHOT_VERSION {
            return Err(DecodeError::new("unknown snapshot version"));
        }
        let mut kv = Kv::new(cfg);
        kv.applied = LogIndex(r.u64()?);
        kv.clock_ms = r.u64()?;
        let key_count = r.u64()?;
        // The smallest key record is 4 + 4 + 8 bytes: refuse a count the bytes cannot hold.
        if key_count > (r.remaining() / 16) as u64 {
            return Err(DecodeError::new("snapshot key count exceeds its bytes"));
        }
        // Checked in a first pass, built in a second from the same bytes: the dictionary is then
        // built in key order in one go (see `Dict::from_sorted`), and never half-built.
        let keys_at = r.pos;
        let mut prev: Option<&[u8]> = None;
        for _ in 0..key_count {
            let k = r.len_prefixed(kv.cfg.max_key_bytes)?;
            r.len_prefixed(kv.cfg.max_value_bytes)?;
            let rev = LogIndex(r.u64()?);
            if prev.is_some_and(|p| p >= k) {
                return Err(DecodeError::new("snapshot keys out of order"));
            }
            if rev > kv.applied || rev.0 == 0 {
                return Err(DecodeError::new("snapshot revision outside the log"));
            }
            prev = Some(k);
        }
        let mut again = Reader::new(&body[keys_at..r.pos]);
        kv.data = Dict::from_sorted(
            key_count as usize,
            (0..key_count).map(|_| {
                let k = again.len_prefixed(usize::MAX).expect("checked above");
                let v = again.len_prefixed(usize::MAX).expect("checked above");
                (k, v, LogIndex(again.u64().expect("checked above")))
            }),
        );
        let session_count = r.u64()?;
        if session_count > kv.cfg.max_sessions as u64 {
            return Err(DecodeError::new(
                "snapshot holds more sessions than allowed",
            ));
        }
        if session_count > (r.remaining() / 25) as u64 {
            return Err(DecodeError::new("snapshot session count exceeds its bytes"));
        }
        let mut prev_id = 0u64;
        for _ in 0..session_count {
            let id = r.u64()?;
            let last_seq = r.u64()?;
            let last_active_ms = r.u64()?;
            let reply = match r.u8()? {
                0 => None,
                1 => Some(decode_cached_reply(&mut r, &kv.cfg, kv.applied)?),
                _ => return Err(DecodeError::new("snapshot session reply tag unknown")),
            };
            if id <= prev_id || id > kv.applied.0 {
                return Err(DecodeError::new("snapshot session ids out of order"));
            }
            if last_active_ms > kv.clock_ms {
                return Err(DecodeError::new("snapshot session active after the clock"));
            }
            if (last_seq == 0) != reply.is_none() {
                return Err(DecodeError::new(
                    "snapshot session reply does not match seq",
                ));
            }
            prev_id = id;
            kv.sessions.insert(
                id,
                Session {
                    last_seq,
                    last_active_ms,
                    reply,
                },
            );
            kv.by_activity.insert((last_active_ms, id));
        }
        if r.remaining() != 0 {
            return Err(DecodeError::new("trailing bytes in snapshot"));
        }
        Ok(kv)
    }
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"ZKVS";
const SNAPSHOT_VERSION: u8 = 1;

/// Only replies of applied writes are ever cached in a session.
fn encode_cached_reply(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Put { revision } => {
            out.push(1);
            out.put_u64(revision.0);
        }
        Reply::Deleted { revision, existed } => {
            out.push(2);
            out.put_u64(revision.0);
            out.push(*existed as u8);
        }
        Reply::CasOk { revision } => {
            out.push(3);
            out.put_u64(revision.0);
        }
        Reply::CasFailed { current } => {
            out.push(4);
            match current {
                None => out.push(0),
                Some((v, r)) => {
                    out.push(1);
                    put_bytes(out, v);
                    out.put_u64(r.0);
                }
            }
        }
        other => panic!("kv: reply {other:?} is never cached in a session"),
    }
}

fn decode_cached_reply(
    r: &mut Reader,
    cfg: &KvConfig,
    applied: LogIndex,
) -> Result<Reply, DecodeError> {
    let revision = |r: &mut Reader| -> Result<LogIndex, DecodeError> {
        let rev = LogIndex(r.u64()?);
        if rev > applied {
            return Err(DecodeError::new("snapshot reply revision beyond the log"));
        }
        Ok(rev)
    };
    Ok(match r.u8()? {
        1 => Reply::Put {
            revision: revision(r)?,
        },
        2 => Reply::Deleted {
            revision: revision(r)?,
            existed: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::new("snapshot reply flag not 0 or 1")),
            },
        },
        3 => Reply::CasOk {
            revision: revision(r)?,
        },
        4 => Reply::CasFailed {
            current: match r.u8()? {
                0 => None,
                1 => {
                    let v = r.len_prefixed(cfg.max_value_bytes)?.to_vec();
                    Some((v, revision(r)?))
                }
                _ => return Err(DecodeError::new("snapshot reply flag not 0 or 1")),
            },
        },
        _ => return Err(DecodeError::new("snapshot reply kind unknown")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Term;

    fn normal(index: u64, p: &Proposal) -> Entry {
        Entry::new(Term(1), LogIndex(index), EntryKind::Normal, &p.encoded())
    }

    fn put(k: &str, v: &str) -> Command {
        Command::Put {
            key: k.into(),
            value: v.into(),
        }
    }

    fn plain(now_ms: u64, command: Command) -> Proposal {
        Proposal {
            session: None,
            now_ms,
            command,
        }
    }

    #[test]
    fn prefetch_changes_nothing_whatever_the_entry_names() {
        // Goal: prefetching is only a hint: for keys present, absent, deleted or moved to a
        // longer value, and entries that are no write or do not decode, the state and the
        // replies are those of applying without it.
        let entries: Vec<Entry> = vec![
            normal(1, &plain(1, put("a", "1"))),
            normal(2, &plain(1, put("b", "2"))),
            normal(3, &plain(1, put("a", "longer value"))),
            normal(4, &plain(1, Command::Delete { key: "b".into() })),
            normal(5, &plain(1, put("b", "3"))),
            normal(
                6,
                &plain(
                    1,
                    Command::Delete {
                        key: "absent".into(),
                    },
                ),
            ),
            Entry::new(Term(1), LogIndex(7), EntryKind::Normal, &[0xff, 1, 2]),
            Entry::new(Term(1), LogIndex(8), EntryKind::Noop, &[]),
            normal(9, &plain(1, Command::RegisterSession)),
            normal(10, &plain(1, put("a", "1"))),
        ];
        let mut plain_kv = Kv::new(KvConfig::default());
        let mut hinted = Kv::new(KvConfig::default());
        for (i, e) in entries.iter().enumerate() {
            // Every entry of the batch, applied or not yet, is named before each apply.
            for other in &entries {
                hinted.prefetch(other);
            }
            let digest = hinted.digest();
            hinted.prefetch(e);
            assert_eq!(
                hinted.digest(),
                digest,
                "prefetch of entry {i} changed the state"
            );
            assert_eq!(hinted.apply(e), plain_kv.apply(e), "reply to entry {i}");
            assert_eq!(hinted, plain_kv, "state after entry {i}");
        }
        hinted.data.check();
    }

    #[test]
    fn noop_and_config_entries_advance_applied_index_without_reply() {
        // Goal: only Normal entries reach the dictionary, yet every entry counts as applied.
        let mut kv = Kv::new(KvConfig::default());
        assert_eq!(
            kv.apply(&Entry::new(Term(1), LogIndex(1), EntryKind::Noop, &[])),
            None
        );
        assert_eq!(
            kv.apply(&Entry::new(
                Term(1),
                LogIndex(2),
                EntryKind::Config,
                &[0, 0]
            )),
            None
        );
        assert_eq!(kv.applied_index(), LogIndex(2));
        assert!(kv.is_empty());
    }

    #[test]
    fn ordered_walks_follow_key_order_whatever_the_write_order() {
        // Goal: the hash map never leaks its order. Method: write keys in a scrambled order,
        // overwrite and delete some, then check iteration, scan and the snapshot round trip.
        let mut kv = Kv::new(KvConfig::default());
        let mut index = 0;
        let mut apply = |kv: &mut Kv, c: Command| {
            index += 1;
            kv.apply(&normal(index, &plain(1, c)));
        };
        for i in [7u32, 3, 9, 1, 5, 8, 2, 6, 4, 0] {
            apply(&mut kv, put(&format!("k{i}"), &format!("v{i}")));
        }
        apply(&mut kv, put("k5", "again"));
        apply(
            &mut kv,
            Command::Delete {
                key: b"k3".to_vec(),
            },
        );
        apply(
            &mut kv,
            Command::Delete {
                key: b"k8".to_vec(),
            },
        );
        apply(&mut kv, put("k3", "back"));
        let keys: Vec<&[u8]> = kv.iter().map(|(k, _, _)| k).collect();
        let want: Vec<String> = [0, 1, 2, 3, 4, 5, 6, 7, 9]
            .iter()
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(keys, want.iter().map(|k| k.as_bytes()).collect::<Vec<_>>());
        assert_eq!(kv.get(b"k5"), Some((&b"again"[..], LogIndex(11))));
        assert_eq!(kv.get(b"k8"), None);
        let (page, more) = kv.scan(b"k", Some(b"k3"), 3);
        let got: Vec<&[u8]> = page.iter().map(|(k, _, _)| k.as_slice()).collect();
        assert_eq!(got, vec![&b"k4"[..], b"k5", b"k6"]);
        assert!(more);
        let restored = Kv::restore(&kv.snapshot_bytes(), KvConfig::default()).unwrap();
        assert_eq!(restored, kv);
        assert_eq!(restored.snapshot_bytes(), kv.snapshot_bytes());
    }

    #[test]
    #[should_panic(expected = "applied out of order")]
    fn entry_out_of_order_is_a_bug() {
        // Goal: a gap in applied indexes is a bug in the host, caught loudly.
        let mut kv = Kv::new(KvConfig::default());
        kv.apply(&normal(2, &plain(0, put("a", "1"))));
    }

    #[test]
    fn undecodable_payload_is_invalid_and_still_applied() {
        // Goal: garbage in a committed entry yields the same Invalid reply on every replica.
        let mut kv = Kv::new(KvConfig::default());
        let r = kv.apply(&Entry::new(
            Term(1),
            LogIndex(1),
            EntryKind::Normal,
            &[9, 9],
        ));
        assert!(matches!(r, Some(Reply::Invalid(_))));
        assert_eq!(kv.applied_index(), LogIndex(1));
    }

    #[test]
    fn proposal_round_trips_and_refuses_every_truncation() {
        // Goal: encode/decode are inverses; any cut of a valid encoding is refused.
        let cfg = KvConfig::default();
        let ps = [
            plain(5, put("k", "v")),
            plain(6, Command::Delete { key: "k".into() }),
            Proposal {
                session: Some(SessionRef { id: 3, seq: 9 }),
                now_ms: 7,
                command: Command::Cas {
                    key: "k".into(),
                    expect: Expect::Value("old".into()),
                    new: Some("new".into()),
                },
            },
            plain(
                8,
                Command::Cas {
                    key: "k".into(),
                    expect: Expect::Revision(4),
                    new: None,
                },
            ),
            plain(
                8,
                Command::Cas {
                    key: "".into(),
                    expect: Expect::Absent,
                    new: None,
                },
            ),
            plain(9, Command::RegisterSession),
        ];
        for p in &ps {
            let enc = p.encoded();
            assert_eq!(&Proposal::decode(&enc, &cfg).unwrap(), p);
            for cut in 0..enc.len() {
                assert!(
                    Proposal::decode(&enc[..cut], &cfg).is_err(),
                    "{p:?} cut {cut}"
                );
            }
            let mut long = enc.clone();
            long.push(0);
            assert!(Proposal::decode(&long, &cfg).is_err());
        }
    }

    #[test]
    fn a_decoded_request_encodes_to_the_proposal_bytes() {
        // Goal: the server's write path (wire request frame, decoded in place, straight to
        // `encode_proposal`) writes exactly the bytes `Proposal::encode` writes, and refuses
        // what is not a write. Method: every write shape through a real frame, both ways.
        use crate::wire::client::{self as wire, decode_request, encode_request, FrameLimits};
        let cases: Vec<(wire::Request, Option<SessionRef>, Command)> = vec![
            (
                wire::Request::Put {
                    session: None,
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                },
                None,
                put("k", "v"),
            ),
            (
                wire::Request::Delete {
                    session: Some((7, 9)),
                    key: b"key".to_vec(),
                },
                Some(SessionRef { id: 7, seq: 9 }),
                Command::Delete { key: "key".into() },
            ),
            (
                wire::Request::Cas {
                    session: Some((1, 2)),
                    key: b"a".to_vec(),
                    expect: wire::Expect::Value(b"old".to_vec()),
                    new: Some(b"new".to_vec()),
                },
                Some(SessionRef { id: 1, seq: 2 }),
                Command::Cas {
                    key: "a".into(),
                    expect: Expect::Value("old".into()),
                    new: Some("new".into()),
                },
            ),
            (
                wire::Request::Cas {
                    session: None,
                    key: b"a".to_vec(),
                    expect: wire::Expect::Absent,
                    new: None,
                },
                None,
                Command::Cas {
                    key: "a".into(),
                    expect: Expect::Absent,
                    new: None,
                },
            ),
            (
                wire::Request::Cas {
                    session: None,
                    key: b"a".to_vec(),
                    expect: wire::Expect::Revision(42),
                    new: Some(Vec::new()),
                },
                None,
                Command::Cas {
                    key: "a".into(),
                    expect: Expect::Revision(42),
                    new: Some(Vec::new()),
                },
            ),
            (
                wire::Request::RegisterSession,
                None,
                Command::RegisterSession,
            ),
        ];
        for (req, session, command) in cases {
            let mut frame = Vec::new();
            encode_request(3, &req, &mut frame);
            let (_, view) = decode_request(&frame, &FrameLimits::default()).unwrap();
            let mut got = Vec::new();
            assert!(encode_proposal(&mut got, 1234, &view));
            let want = Proposal {
                session,
                now_ms: 1234,
                command,
            };
            assert_eq!(got, want.encoded(), "{req:?}");
        }
        let mut out = Vec::new();
        assert!(!encode_proposal(&mut out, 1, &RequestView::Status));
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_key_or_value_is_refused_by_decode() {
        // Goal: the configured limits are enforced at the gateway.
        let cfg = KvConfig {
            max_key_bytes: 3,
            max_value_bytes: 4,
            ..KvConfig::default()
        };
        assert!(Proposal::decode(&plain(0, put("abc", "defg")).encoded(), &cfg).is_ok());
        assert!(Proposal::decode(&plain(0, put("abcd", "x")).encoded(), &cfg).is_err());
        assert!(Proposal::decode(&plain(0, put("a", "defgh")).encoded(), &cfg).is_err());
    }

    #[test]
    fn snapshot_checksum_catches_a_flipped_bit() {
        // Goal: restore refuses a snapshot whose CRC does not match.
        let mut kv = Kv::new(KvConfig::default());
        kv.apply(&normal(1, &plain(0, put("a", "1"))));
        let mut snap = kv.snapshot_bytes();
        assert_eq!(Kv::restore(&snap, KvConfig::default()).unwrap(), kv);
        snap[10] ^= 4;
        assert_eq!(
            Kv::restore(&snap, KvConfig::default()).unwrap_err().what,
            "snapshot checksum mismatch"
        );
    }

    #[test]
    fn changes_are_reported_only_when_something_changed() {
        // Goal: a watch sees a change for every put and every delete or compare-and-swap that
        // changed the dictionary, and none for a write that changed nothing (a failed CAS, a
        // delete of an absent key, a CAS deleting an absent key, a retried write answered from
        // its session). Method: each case through `apply_observed`, collecting the changes.
        let mut kv = Kv::new(KvConfig::default());
        let mut seen: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut index = 0;
        let mut apply = |kv: &mut Kv, session: Option<SessionRef>, c: Command| {
            index += 1;
            let p = Proposal {
                session,
                now_ms: 1,
                command: c,
            };
            let e = normal(index, &p);
            let data = e.data.as_ptr_range();
            let within = |b: &[u8]| data.start <= b.as_ptr() && b.as_ptr_range().end <= data.end;
            kv.apply_observed(&e, &mut |c| {
                // The watch history shares the entry's bytes instead of copying them only if
                // a change's key and value are parts of the entry's data.
                assert!(within(c.key) && c.value.map_or(true, within), "{c:?}");
                seen.push((c.revision.0, c.key.to_vec(), c.value.map(<[u8]>::to_vec)))
            })
        };
        let del = |k: &str| Command::Delete { key: k.into() };
        let cas = |k: &str, expect: Expect, new: Option<&str>| Command::Cas {
            key: k.into(),
            expect,
            new: new.map(Into::into),
        };
        apply(&mut kv, None, put("a", "1")); // 1: change
        apply(&mut kv, None, del("zz")); // 2: absent, nothing
        apply(
            &mut kv,
            None,
            cas("a", Expect::Value("9".into()), Some("2")),
        ); // 3: fails
        apply(&mut kv, None, cas("b", Expect::Absent, None)); // 4: holds, deletes nothing
        apply(
            &mut kv,
            None,
            cas("a", Expect::Value("1".into()), Some("2")),
        ); // 5: change
        apply(&mut kv, None, cas("a", Expect::Revision(5), None)); // 6: deletes a
        let id = match apply(&mut kv, None, Command::RegisterSession) {
            Some(Reply::SessionRegistered { id }) => id, // 7: a session, no key changed
            other => panic!("{other:?}"),
        };
        let tag = Some(SessionRef { id, seq: 1 });
        apply(&mut kv, tag, put("c", "3")); // 8: change
        apply(&mut kv, tag, put("c", "3")); // 9: the retry: cached reply, nothing applied
        apply(&mut kv, None, del("c")); // 10: change
        apply(&mut kv, None, put("c", "3")); // 11: the same value again: a new revision
        let v = |s: &str| Some(s.as_bytes().to_vec());
        assert_eq!(
            seen,
            vec![
                (1, b"a".to_vec(), v("1")),
                (5, b"a".to_vec(), v("2")),
                (6, b"a".to_vec(), None),
                (8, b"c".to_vec(), v("3")),
                (10, b"c".to_vec(), None),
                (11, b"c".to_vec(), v("3")),
            ]
        );
        assert_eq!(kv.applied_index(), LogIndex(11));
    }

    #[test]
    fn snapshot_encoded_in_slices_restores_the_same_state() {
        // Goal: a snapshot encoded a few keys per step is byte-identical to one taken at once
        // and restores the same state. Method: 10 keys and a session, 3 keys per step.
        let mut kv = Kv::new(KvConfig::default());
        for i in 0..10u64 {
            let k = format!("k{i}");
            kv.apply(&normal(i + 1, &plain(i, put(&k, "v"))));
        }
        let whole = kv.snapshot_bytes();
        let mut enc = kv.snapshot_start();
        let mut steps = 1;
        while !kv.snapshot_step(&mut enc, 3) {
            steps += 1;
        }
        assert_eq!(steps, 4);
        let sliced = kv.snapshot_finish(enc);
        assert_eq!(sliced, whole);
        assert_eq!(Kv::restore(&sliced, KvConfig::default()).unwrap(), kv);
    }
}
