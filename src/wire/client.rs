//! The client protocol: length-prefixed frames carrying requests from applications to a server
//! and responses back, with a request id so that one connection pipelines many requests and
//! responses may come back out of order. Owns the request/response vocabulary and its bytes.
//! Must not: know Raft or the dictionary's rules, allocate by an unchecked length, panic on any
//! input. The byte layout is specified in `wire/mod.rs`.
//!
//! Servers decode with [`decode_request`], which borrows keys and values from the frame
//! ([`RequestView`]); the server decodes each frame where it lies in the connection's buffer
//! and `kv::encode_proposal` takes the same view, so a value travels from the socket buffer to
//! the proposal with one copy. [`decode_request_owned`] gives an owned [`Request`] for code
//! that keeps it. Clients decode
//! with [`decode_response`] (owned). Encoders do not enforce limits: the sender is expected to
//! know them, and the receiver's decoder refuses what is over them with a typed error.

use std::fmt;

use crate::bytes::{le_u32, le_u64, set_u32, set_u64, DecodeError, PutLe, Reader};

/// Bytes of the frame header: `len: u32`, `request_id: u64`, `opcode: u8`.
pub const FRAME_HEADER_BYTES: usize = 13;
/// The smallest value of the `len` field: request id and opcode.
const MIN_LEN_FIELD: usize = 9;
/// Longest free-text string (error detail, role) carried; longer ones are cut when encoded.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest member address carried (as in `types::MAX_ADDR_LEN`).
pub const MAX_ADDR_BYTES: usize = crate::types::MAX_ADDR_LEN;

/// How fresh a read must be.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Served by the leader after a ReadIndex round: reflects every write acknowledged before
    /// the read was sent.
    Linearizable,
    /// Served from the local state of whichever node answers; the reply's `applied_index`
    /// says how far that state has got.
    Stale,
}

/// The condition of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// The key holds exactly this value.
    Value(Vec<u8>),
    /// The key is absent.
    Absent,
    /// The key was last written at this revision (log index).
    Revision(u64),
}

/// A session tag on a write: `(session id, sequence number)`. Writes with a session are applied
/// at most once per sequence number (exactly-once across retries); `None` writes are not
/// deduplicated.
pub type SessionTag = Option<(u64, u64)>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    RegisterSession,
    Get {
        key: Vec<u8>,
        consistency: Consistency,
    },
    Put {
        session: SessionTag,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        session: SessionTag,
        key: Vec<u8>,
    },
    /// Writes `new` (or deletes the key when `new` is `None`) if `expect` holds.
    Cas {
        session: SessionTag,
        key: Vec<u8>,
        expect: Expect,
        new: Option<Vec<u8>>,
    },
    /// Keys starting with `prefix`, in byte order, after `start_after` when given, at most
    /// `limit` of them (the server may cap it lower).
    Scan {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
        consistency: Consistency,
    },
    Len {
        consistency: Consistency,
    },
    Status,
    Members,
    MemberAdd {
        id: u64,
        addr: String,
        learner: bool,
    },
    MemberPromote {
        id: u64,
    },
    MemberRemove {
        id: u64,
    },
    /// Hands leadership to `to`, or to the most caught-up voter when `None`.
    TransferLeader {
        to: Option<u64>,
    },
    /// Takes a consistent snapshot of the dictionary on the leader (after a ReadIndex round, so
    /// it holds every write acknowledged before the request) and holds it for `SnapshotChunk`
    /// requests; answered with `SnapshotBegin`.
    SnapshotSave,
    /// The bytes of held snapshot `id` from `offset` on (at most `SNAPSHOT_CHUNK_BYTES`), from the
    /// server that answered `SnapshotBegin`; answered with `SnapshotChunk`.
    SnapshotChunk {
        id: u64,
        offset: u64,
    },
    /// Streams the changes to keys starting with `prefix` (empty: every key) from revision
    /// `from_revision` on (0: from the next revision the server applies), as `WatchEvents` and
    /// `WatchProgress` frames carrying this request's id, until cancelled or cut off.
    Watch {
        prefix: Vec<u8>,
        from_revision: u64,
    },
    /// Ends the watch this connection opened with request id `watch_id`.
    CancelWatch {
        watch_id: u64,
    },
}

/// One change a watch reports: a key set to a value, or deleted, by the entry at `revision`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum WatchEvent {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        revision: u64,
    },
    Delete {
        key: Vec<u8>,
        revision: u64,
    },
}

impl WatchEvent {
    pub fn key(&self) -> &[u8] {
        match self {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision (log index) of the write that made this change.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put { revision, .. } | WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The value a put set; `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            WatchEvent::Put { value, .. } => Some(value),
            WatchEvent::Delete { .. } => None,
        }
    }
}

/// Keys and values shown as text where they are printable (escaped otherwise), not as lists of
/// numbers.
impl fmt::Debug for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &[u8]| format!("\"{}\"", b.escape_ascii());
        match self {
            WatchEvent::Put {
                key,
                value,
                revision,
            } => write!(f, "Put({revision} {} = {})", text(key), text(value)),
            WatchEvent::Delete { key, revision } => {
                write!(f, "Delete({revision} {})", text(key))
            }
        }
    }
}

/// A borrowed [`Expect`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExpectView<'a> {
    Value(&'a [u8]),
    Absent,
    Revision(u64),
}

/// A request whose keys, values and strings borrow from the frame it was decoded from: the
/// server's decode path, which copies nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RequestView<'a> {
    RegisterSession,
    Get {
        key: &'a [u8],
        consistency: Consistency,
    },
    Put {
        session: SessionTag,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        session: SessionTag,
        key: &'a [u8],
    },
    Cas {
        session: SessionTag,
        key: &'a [u8],
        expect: ExpectView<'a>,
        new: Option<&'a [u8]>,
    },
    Scan {
        prefix: &'a [u8],
        start_after: Option<&'a [u8]>,
        limit: u32,
        consistency: Consistency,
    },
    Len {
        consistency: Consistency,
    },
    Status,
    Members,
    MemberAdd {
        id: u64,
        addr: &'a str,
        learner: bool,
    },
    MemberPromote {
        id: u64,
    },
    MemberRemove {
        id: u64,
    },
    TransferLeader {
        to: Option<u64>,
    },
    SnapshotSave,
    SnapshotChunk {
        id: u64,
        offset: u64,
    },
    Watch {
        prefix: &'a [u8],
        from_revision: u64,
    },
    CancelWatch {
        watch_id: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberInfo {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
}

/// Replication progress of one peer, as the leader reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerStatus {
    pub id: u64,
    pub match_index: u64,
    /// Entries the peer is behind the leader's last index.
    pub lag: u64,
    /// A snapshot transfer under way: (bytes acknowledged, total bytes).
    pub snapshot_progress: Option<(u64, u64)>,
}

/// One server's view of itself and the cluster, for `zatt status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Status {
    pub id: u64,
    /// "leader", "follower", "candidate", "learner", ...
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub members: Vec<MemberInfo>,
    /// Filled in by the leader only.
    pub peers: Vec<PeerStatus>,
    pub wal_bytes: u64,
    pub fsync_p50_us: u64,
    pub fsync_p99_us: u64,
    /// Peer datagrams dropped, per reason name (`peer::DropReason::name`).
    pub dropped_datagrams: Vec<(String, u64)>,
    pub sessions: u64,
    pub keys: u64,
    /// The server's process id on its host (0 when unknown), so that an operator can signal
    /// the very process that answered, e.g. to kill the leader in a drill.
    pub pid: u32,
    /// The incarnation of the server's data directory (a random id drawn when it was created;
    /// 0 when it has none): peers know a member by id and incarnation.
    pub incarnation: u64,
    /// Entries this server may have acknowledged and lost to a damaged log tail, as (term,
    /// index) at most: while set it withholds its vote from candidates behind it.
    pub lost_entries: Option<(u64, u64)>,
    /// The cluster id every peer datagram of this cluster carries.
    pub cluster_id: u64,
    /// Bytes free for this server on the file system of its data directory, as last measured.
    pub disk_free_bytes: u64,
    /// The `--min-free-disk` threshold in bytes (0: no threshold).
    pub disk_min_free_bytes: u64,
    /// The disk-space alarm: free space is below the threshold, so this server (as leader)
    /// refuses writes that add data with `NoSpace`.
    pub disk_alarm: bool,
}

/// A snapshot a server took for `SnapshotSave` and holds for `SnapshotChunk` requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotInfo {
    /// The handle `SnapshotChunk` requests name; valid on the answering server only.
    pub id: u64,
    pub cluster_id: u64,
    /// The log index the snapshot stands for: the revision of the latest write it holds.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// Bytes of snapshot data.
    pub size: u64,
    /// The CRC-32 (IEEE) the data ends with: the checksum of every data byte before its last 4.
    pub checksum: u32,
    /// The membership at `index`.
    pub members: Vec<MemberInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Response {
    SessionRegistered {
        id: u64,
    },
    Value {
        value: Option<Vec<u8>>,
        /// The revision (log index) of the key's last write; 0 when absent.
        revision: u64,
        /// The state the read was served from; for stale reads this says how stale.
        applied_index: u64,
    },
    Written {
        revision: u64,
    },
    Deleted {
        revision: u64,
        existed: bool,
    },
    CasOk {
        revision: u64,
    },
    /// The condition did not hold; `current` is the key's value and revision, if present.
    CasFailed {
        current: Option<(Vec<u8>, u64)>,
    },
    /// `(key, value, revision)` items in key order; `more` when the scan stopped at the limit.
    ScanPage {
        items: Vec<(Vec<u8>, Vec<u8>, u64)>,
        more: bool,
        applied_index: u64,
    },
    Len {
        len: u64,
        applied_index: u64,
    },
    /// Boxed: the largest answer by far, and a rare one.
    Status(Box<Status>),
    Members(Vec<MemberInfo>),
    /// A membership change or leadership transfer was accepted; a watch was cancelled.
    Done,
    Error(ErrorKind),
    /// A snapshot was taken and is held for `SnapshotChunk` requests.
    SnapshotBegin(SnapshotInfo),
    /// Bytes of a held snapshot from `offset` on; fewer than asked only at its end.
    SnapshotChunk {
        offset: u64,
        data: Vec<u8>,
    },
    /// Changes a watch reports, in revision order (one frame may carry several).
    WatchEvents(Vec<WatchEvent>),
    /// Every change a watch is to report up to `revision` has been sent before this frame.
    WatchProgress {
        revision: u64,
    },
}

/// Why a request failed. Each variant documents whether the request may have taken effect
/// ("applied: no" — safe to retry anywhere; "applied: maybe" — a write may have been applied,
/// and only a session-tagged retry is safe). See [`ErrorKind::may_have_applied`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// This node is not the leader; retry at the hint if any. Applied: no.
    NotLeader {
        leader: Option<u64>,
        leader_addr: Option<String>,
    },
    /// A frame, key or value over the server's limit (`what` is "frame", "key" or "value").
    /// Applied: no.
    TooLarge { what: String, limit: u64 },
    /// The leader holds too many uncommitted proposals; back off and retry. Applied: no.
    Busy,
    /// This connection has too many requests awaiting replies. Applied: no.
    TooManyInFlight { limit: u64 },
    /// The server refused the connection: it has too many. Applied: no.
    TooManyConnections { limit: u64 },
    /// The session is unknown or expired; register a new one. Applied: no.
    SessionExpired,
    /// The session already moved past this sequence number, so its reply is forgotten: the
    /// request was applied earlier or superseded. Applied: maybe.
    StaleRequest,
    /// The server gave up waiting for the request to commit. Applied: maybe.
    Timeout,
    /// Refused before being proposed: no leader known, no quorum, node still starting.
    /// Applied: no.
    Unavailable(String),
    /// The request makes no sense (bad frame, unknown opcode, bad argument). Applied: no.
    Invalid(String),
    /// A membership change or leadership transfer was refused, with the reason. Applied: no.
    ConfChange(String),
    /// The server is stopping; requests in flight had not been answered. Applied: maybe.
    ShuttingDown,
    /// A watch's start revision is older than the changes this server still keeps: the oldest
    /// revision a watch can start from here is `oldest`. Load the current state and watch from
    /// the revision after it. Applied: no.
    Compacted { oldest: u64 },
    /// A watch was cut off: its events waited unread on the connection beyond the server's
    /// limit of `limit` bytes. Watch again from the revision after the last one received.
    /// Applied: no.
    WatchOverflow { limit: u64 },
    /// The leader's disk has less free space than its `--min-free-disk`: writes that add data
    /// (Put, Cas with a new value) are refused until space is freed; reads, deletes and status
    /// keep working. Applied: no.
    NoSpace {
        free_bytes: u64,
        min_free_bytes: u64,
    },
}

impl ErrorKind {
    /// Whether a write that got this error may nevertheless have been applied (so that a
    /// retry without a session could apply it twice).
    pub fn may_have_applied(&self) -> bool {
        matches!(
            self,
            ErrorKind::StaleRequest | ErrorKind::Timeout | ErrorKind::ShuttingDown
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::NotLeader {
                leader: Some(id),
                leader_addr: Some(addr),
            } => write!(f, "not the leader: retry at node {id} ({addr})"),
            ErrorKind::NotLeader {
                leader: Some(id), ..
            } => write!(f, "not the leader: retry at node {id}"),
            ErrorKind::NotLeader { .. } => {
                f.write_str("not the leader and no leader known: retry shortly or at another node")
            }
            ErrorKind::TooLarge { what, limit } => {
                write!(f, "{what} too large: the server's limit is {limit} bytes; send a smaller {what}")
            }
            ErrorKind::Busy => f.write_str("server busy (too many uncommitted writes): back off and retry"),
            ErrorKind::TooManyInFlight { limit } => write!(
                f,
                "too many requests in flight on this connection (limit {limit}): wait for replies before sending more"
            ),
            ErrorKind::TooManyConnections { limit } => write!(
                f,
                "server has too many connections (limit {limit}): retry later or at another node"
            ),
            ErrorKind::SessionExpired => {
                f.write_str("session expired or unknown: register a new session and retry")
            }
            ErrorKind::StaleRequest => f.write_str(
                "request older than the session's latest: it was applied or superseded earlier; do not retry it",
            ),
            ErrorKind::Timeout => f.write_str(
                "timed out waiting for commit: the write may have been applied; retry with the same session tag",
            ),
            ErrorKind::Unavailable(why) => write!(f, "unavailable ({why}): retry shortly or at another node"),
            ErrorKind::Invalid(why) => write!(f, "invalid request ({why}): fix the request, retrying will not help"),
            ErrorKind::ConfChange(why) => {
                write!(f, "membership change refused ({why}): check `zatt status` and retry when it allows")
            }
            ErrorKind::ShuttingDown => f.write_str(
                "server shutting down: the request may have been applied; retry at another node with the same session tag",
            ),
            ErrorKind::Compacted { oldest } => write!(
                f,
                "watch start revision no longer kept: the oldest revision a watch can start from here is {oldest}; reload and watch from the revision after the load"
            ),
            ErrorKind::WatchOverflow { limit } => write!(
                f,
                "watch cut off: its events waited unread beyond the server's limit of {limit} bytes; watch again from the revision after the last event received"
            ),
            ErrorKind::NoSpace { free_bytes, min_free_bytes } => write!(
                f,
                "no space: the leader's disk has {free_bytes} bytes free, below its --min-free-disk of {min_free_bytes} bytes; writes are refused until space is freed (reads and deletes work), not applied"
            ),
        }
    }
}

impl ErrorKind {
    /// The kind's name in snake case, for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorKind::NotLeader { .. } => "not_leader",
            ErrorKind::TooLarge { .. } => "too_large",
            ErrorKind::Busy => "busy",
            ErrorKind::TooManyInFlight { .. } => "too_many_in_flight",
            ErrorKind::TooManyConnections { .. } => "too_many_connections",
            ErrorKind::SessionExpired => "session_expired",
            ErrorKind::StaleRequest => "stale_request",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable(_) => "unavailable",
            ErrorKind::Invalid(_) => "invalid",
            ErrorKind::ConfChange(_) => "conf_change",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::Compacted { .. } => "compacted",
            ErrorKind::WatchOverflow { .. } => "watch_overflow",
            ErrorKind::NoSpace { .. } => "no_space",
        }
    }

    /// The kind's number on the wire (the `u8` after the Error opcode).
    pub fn code(&self) -> u8 {
        match self {
            ErrorKind::NotLeader { .. } => 1,
            ErrorKind::TooLarge { .. } => 2,
            ErrorKind::Busy => 3,
            ErrorKind::TooManyInFlight { .. } => 4,
            ErrorKind::TooManyConnections { .. } => 5,
            ErrorKind::SessionExpired => 6,
            ErrorKind::StaleRequest => 7,
            ErrorKind::Timeout => 8,
            ErrorKind::Unavailable(_) => 9,
            ErrorKind::Invalid(_) => 10,
            ErrorKind::ConfChange(_) => 11,
            ErrorKind::ShuttingDown => 12,
            ErrorKind::Compacted { .. } => 13,
            ErrorKind::WatchOverflow { .. } => 14,
            ErrorKind::NoSpace { .. } => 15,
        }
    }
}

/// Bytes of snapshot data one `SnapshotChunk` answer carries at most.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A request opcode's name in snake case (`"put"`), for metrics labels; `"unknown"` for a byte
/// that is no request opcode.
pub fn request_name(opcode: u8) -> &'static str {
    match opcode {
        op::REGISTER_SESSION => "register_session",
        op::GET => "get",
        op::PUT => "put",
        op::DELETE => "delete",
        op::CAS => "cas",
        op::SCAN => "scan",
        op::LEN => "len",
        op::STATUS => "status",
        op::MEMBERS => "members",
        op::MEMBER_ADD => "member_add",
        op::MEMBER_PROMOTE => "member_promote",
        op::MEMBER_REMOVE => "member_remove",
        op::TRANSFER_LEADER => "transfer_leader",
        op::WATCH => "watch",
        op::CANCEL_WATCH => "cancel_watch",
        op::SNAPSHOT_SAVE => "snapshot_save",
        op::SNAPSHOT_CHUNK => "snapshot_chunk",
        _ => "unknown",
    }
}

/// The opcode of a whole frame whose header is present (byte 12).
pub fn frame_opcode(buf: &[u8]) -> Option<u8> {
    buf.get(FRAME_HEADER_BYTES - 1).copied()
}

impl std::error::Error for ErrorKind {}

/// Limits a decoder enforces before allocating or accepting.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest whole frame, length prefix included.
    pub max_frame_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for FrameLimits {
    /// 4 MiB frames, 4 KiB keys, 1 MiB values.
    fn default() -> Self {
        FrameLimits {
            max_frame_bytes: 4 << 20,
            max_key_bytes: 4 << 10,
            max_value_bytes: 1 << 20,
        }
    }
}

/// A frame the decoders refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame, key or value over its limit (`what`: "frame", "key" or "value"); `len` is the
    /// declared size. For "frame" from [`split_frame`] the frame's bytes may be skipped
    /// (`len` counts the whole frame, prefix included) and the request answered with
    /// [`ErrorKind::TooLarge`], or the connection closed.
    TooLarge {
        what: &'static str,
        limit: u64,
        len: u64,
    },
    /// Bytes that do not form a frame of this protocol.
    Malformed(&'static str),
}

impl FrameError {
    /// The error to answer a request with when its frame was refused.
    pub fn to_error_kind(&self) -> ErrorKind {
        match self {
            FrameError::TooLarge { what, limit, .. } => ErrorKind::TooLarge {
                what: (*what).to_string(),
                limit: *limit,
            },
            FrameError::Malformed(what) => ErrorKind::Invalid((*what).to_string()),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { what, limit, len } => {
                write!(f, "{what} of {len} bytes over the limit of {limit}")
            }
            FrameError::Malformed(what) => write!(f, "malformed frame: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl Request {
    /// Borrows this request as a view (no copy); the encoder works on views.
    pub fn view(&self) -> RequestView<'_> {
        match self {
            Request::RegisterSession => RequestView::RegisterSession,
            Request::Get { key, consistency } => RequestView::Get {
                key,
                consistency: *consistency,
            },
            Request::Put {
                session,
                key,
                value,
            } => RequestView::Put {
                session: *session,
                key,
                value,
            },
            Request::Delete { session, key } => RequestView::Delete {
                session: *session,
                key,
            },
            Request::Cas {
                session,
                key,
                expect,
                new,
            } => RequestView::Cas {
                session: *session,
                key,
                expect: match expect {
                    Expect::Value(v) => ExpectView::Value(v),
                    Expect::Absent => ExpectView::Absent,
                    Expect::Revision(r) => ExpectView::Revision(*r),
                },
                new: new.as_deref(),
            },
            Request::Scan {
                prefix,
                start_after,
                limit,
                consistency,
            } => RequestView::Scan {
                prefix,
                start_after: start_after.as_deref(),
                limit: *limit,
                consistency: *consistency,
            },
            Request::Len { consistency } => RequestView::Len {
                consistency: *consistency,
            },
            Request::Status => RequestView::Status,
            Request::Members => RequestView::Members,
            Request::MemberAdd { id, addr, learner } => RequestView::MemberAdd {
                id: *id,
                addr,
                learner: *learner,
            },
            Request::MemberPromote { id } => RequestView::MemberPromote { id: *id },
            Request::MemberRemove { id } => RequestView::MemberRemove { id: *id },
            Request::TransferLeader { to } => RequestView::TransferLeader { to: *to },
            Request::Watch {
                prefix,
                from_revision,
            } => RequestView::Watch {
                prefix,
                from_revision: *from_revision,
            },
            Request::CancelWatch { watch_id } => RequestView::CancelWatch {
                watch_id: *watch_id,
            },
            Request::SnapshotSave => RequestView::SnapshotSave,
            Request::SnapshotChunk { id, offset } => RequestView::SnapshotChunk {
                id: *id,
                offset: *offset,
            },
        }
    }
}

impl RequestView<'_> {
    /// Copies the borrowed bytes into an owned request.
    pub fn to_request(&self) -> Request {
        match *self {
            RequestView::RegisterSession => Request::RegisterSession,
            RequestView::Get { key, consistency } => Request::Get {
                key: key.to_vec(),
                consistency,
            },
            RequestView::Put {
                session,
                key,
                value,
            } => Request::Put {
                session,
                key: key.to_vec(),
                value: value.to_vec(),
            },
            RequestView::Delete { session, key } => Request::Delete {
                session,
                key: key.to_vec(),
            },
            RequestView::Cas {
                session,
                key,
                expect,
                new,
            } => Request::Cas {
                session,
                key: key.to_vec(),
                expect: match expect {
                    ExpectView::Value(v) => Expect::Value(v.to_vec()),
                    ExpectView::Absent => Expect::Absent,
                    ExpectView::Revision(r) => Expect::Revision(r),
                },
                new: new.map(|n| n.to_vec()),
            },
            RequestView::Scan {
                prefix,
                start_after,
                limit,
                consistency,
            } => Request::Scan {
                prefix: prefix.to_vec(),
                start_after: start_after.map(|s| s.to_vec()),
                limit,
                consistency,
            },
            RequestView::Len { consistency } => Request::Len { consistency },
            RequestView::Status => Request::Status,
            RequestView::Members => Request::Members,
            RequestView::MemberAdd { id, addr, learner } => Request::MemberAdd {
                id,
                addr: addr.to_string(),
                learner,
            },
            RequestView::MemberPromote { id } => Request::MemberPromote { id },
            RequestView::MemberRemove { id } => Request::MemberRemove { id },
            RequestView::TransferLeader { to } => Request::TransferLeader { to },
            RequestView::Watch {
                prefix,
                from_revision,
            } => Request::Watch {
                prefix: prefix.to_vec(),
                from_revision,
            },
            RequestView::CancelWatch { watch_id } => Request::CancelWatch { watch_id },
            RequestView::SnapshotSave => Request::SnapshotSave,
            RequestView::SnapshotChunk { id, offset } => Request::SnapshotChunk { id, offset },
        }
    }

    /// Whether this request has an effect a blind retry could repeat: it changes the dictionary,
    /// the sessions or the membership, or moves leadership. Reads and status queries do not.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            RequestView::RegisterSession
                | RequestView::Put { .. }
                | RequestView::Delete { .. }
                | RequestView::Cas { .. }
                | RequestView::MemberAdd { .. }
                | RequestView::MemberPromote { .. }
                | RequestView::MemberRemove { .. }
                | RequestView::TransferLeader { .. }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes.

mod op {
    pub const REGISTER_SESSION: u8 = 1;
    pub const GET: u8 = 2;
    pub const PUT: u8 = 3;
    pub const DELETE: u8 = 4;
    pub const CAS: u8 = 5;
    pub const SCAN: u8 = 6;
    pub const LEN: u8 = 7;
    pub const STATUS: u8 = 8;
    pub const MEMBERS: u8 = 9;
    pub const MEMBER_ADD: u8 = 10;
    pub const MEMBER_PROMOTE: u8 = 11;
    pub const MEMBER_REMOVE: u8 = 12;
    pub const TRANSFER_LEADER: u8 = 13;
    pub const WATCH: u8 = 14;
    pub const CANCEL_WATCH: u8 = 15;
    pub const SNAPSHOT_SAVE: u8 = 16;
    pub const SNAPSHOT_CHUNK: u8 = 17;

    pub const R_SESSION_REGISTERED: u8 = 0x81;
    pub const R_VALUE: u8 = 0x82;
    pub const R_WRITTEN: u8 = 0x83;
    pub const R_DELETED: u8 = 0x84;
    pub const R_CAS_OK: u8 = 0x85;
    pub const R_CAS_FAILED: u8 = 0x86;
    pub const R_SCAN_PAGE: u8 = 0x87;
    pub const R_LEN: u8 = 0x88;
    pub const R_STATUS: u8 = 0x89;
    pub const R_MEMBERS: u8 = 0x8A;
    pub const R_DONE: u8 = 0x8B;
    pub const R_ERROR: u8 = 0x8C;
    pub const R_WATCH_EVENTS: u8 = 0x8D;
    pub const R_WATCH_PROGRESS: u8 = 0x8E;
    // 0x8F is kept for the watch responses.
    pub const R_SNAPSHOT_BEGIN: u8 = 0x90;
    pub const R_SNAPSHOT_CHUNK: u8 = 0x91;
}

/// Whether `opcode` is a response's (`0x81`–`0x8E`, `0x90`–`0x91`): for a client telling a
/// Zatt frame's header from another protocol's bytes.
pub fn is_response_opcode(opcode: u8) -> bool {
    matches!(
        opcode,
        op::R_SESSION_REGISTERED..=op::R_WATCH_PROGRESS | op::R_SNAPSHOT_BEGIN..=op::R_SNAPSHOT_CHUNK
    )
}

// ---------------------------------------------------------------------------------------------
// Encoding.

struct Enc<'a> {
    out: &'a mut Vec<u8>,
}

impl Enc<'_> {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.out.put_u32(v);
    }
    fn u64(&mut self, v: u64) {
        self.out.put_u64(v);
    }
    fn bool(&mut self, v: bool) {
        self.out.push(v as u8);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.bytes(b);
            }
        }
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
    /// Text cut to `max` bytes at a character boundary, so the decoder's limit always holds.
    fn str(&mut self, s: &str, max: usize) {
        let mut n = s.len().min(max);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.bytes(&s.as_bytes()[..n]);
    }
    fn opt_str(&mut self, s: Option<&str>, max: usize) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s, max);
            }
        }
    }
    fn session(&mut self, s: SessionTag) {
        match s {
            None => self.u8(0),
            Some((id, seq)) => {
                self.u8(1);
                self.u64(id);
                self.u64(seq);
            }
        }
    }
    fn consistency(&mut self, c: Consistency) {
        self.u8(match c {
            Consistency::Linearizable => 0,
            Consistency::Stale => 1,
        });
    }
    fn member(&mut self, m: &MemberInfo) {
        self.u64(m.id);
        self.str(&m.addr, MAX_ADDR_BYTES);
        self.bool(m.voter);
    }
}

/// Writes the frame header with a placeholder length; returns where the frame starts.
fn begin_frame(out: &mut Vec<u8>, id: u64, opcode: u8) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u64(id);
    out.push(opcode);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as u32;
    set_u32(out, start, len);
}

/// Appends one request frame to `out`.
pub fn encode_request(id: u64, req: &Request, out: &mut Vec<u8>) {
    encode_request_view(id, &req.view(), out)
}

/// Appends one request frame to `out` from a borrowed request.
pub fn encode_request_view(id: u64, req: &RequestView<'_>, out: &mut Vec<u8>) {
    let opcode = match req {
        RequestView::RegisterSession => op::REGISTER_SESSION,
        RequestView::Get { .. } => op::GET,
        RequestView::Put { .. } => op::PUT,
        RequestView::Delete { .. } => op::DELETE,
        RequestView::Cas { .. } => op::CAS,
        RequestView::Scan { .. } => op::SCAN,
        RequestView::Len { .. } => op::LEN,
        RequestView::Status => op::STATUS,
        RequestView::Members => op::MEMBERS,
        RequestView::MemberAdd { .. } => op::MEMBER_ADD,
        RequestView::MemberPromote { .. } => op::MEMBER_PROMOTE,
        RequestView::MemberRemove { .. } => op::MEMBER_REMOVE,
        RequestView::TransferLeader { .. } => op::TRANSFER_LEADER,
        RequestView::Watch { .. } => op::WATCH,
        RequestView::CancelWatch { .. } => op::CANCEL_WATCH,
        RequestView::SnapshotSave => op::SNAPSHOT_SAVE,
        RequestView::SnapshotChunk { .. } => op::SNAPSHOT_CHUNK,
    };
    let start = begin_frame(out, id, opcode);
    let mut e = Enc { out };
    match *req {
        RequestView::RegisterSession
        | RequestView::Status
        | RequestView::Members
        | RequestView::SnapshotSave => {}
        RequestView::Get { key, consistency } => {
            e.consistency(consistency);
            e.bytes(key);
        }
        RequestView::Put {
            session,
            key,
            value,
        } => {
            e.session(session);
            e.bytes(key);
            e.bytes(value);
        }
        RequestView::Delete { session, key } => {
            e.session(session);
            e.bytes(key);
        }
        RequestView::Cas {
            session,
            key,
            expect,
            new,
        } => {
            e.session(session);
            e.bytes(key);
            match expect {
                ExpectView::Value(v) => {
                    e.u8(0);
                    e.bytes(v);
                }
                ExpectView::Absent => e.u8(1),
                ExpectView::Revision(r) => {
                    e.u8(2);
                    e.u64(r);
                }
            }
            e.opt_bytes(new);
        }
        RequestView::Scan {
            prefix,
            start_after,
            limit,
            consistency,
        } => {
            e.consistency(consistency);
            e.u32(limit);
            e.bytes(prefix);
            e.opt_bytes(start_after);
        }
        RequestView::Len { consistency } => e.consistency(consistency),
        RequestView::MemberAdd { id, addr, learner } => {
            e.u64(id);
            e.bool(learner);
            e.str(addr, MAX_ADDR_BYTES);
        }
        RequestView::MemberPromote { id } | RequestView::MemberRemove { id } => e.u64(id),
        RequestView::TransferLeader { to } => e.opt_u64(to),
        RequestView::Watch {
            prefix,
            from_revision,
        } => {
            e.u64(from_revision);
            e.bytes(prefix);
        }
        RequestView::CancelWatch { watch_id } => e.u64(watch_id),
        RequestView::SnapshotChunk { id, offset } => {
            e.u64(id);
            e.u64(offset);
        }
    }
    end_frame(out, start);
}

/// Appends a `Response::Value` frame from a borrowed value: the server's read path, which
/// answers from its store without building an owned `Response`.
pub fn encode_value_response(
    id: u64,
    value: Option<&[u8]>,
    revision: u64,
    applied_index: u64,
    out: &mut Vec<u8>,
) {
    let start = begin_frame(out, id, op::R_VALUE);
    let mut e = Enc { out };
    e.u64(revision);
    e.u64(applied_index);
    e.opt_bytes(value);
    end_frame(out, start);
}

/// Appends one response frame to `out`.
pub fn encode_response(id: u64, resp: &Response, out: &mut Vec<u8>) {
    if let Response::Value {
        value,
        revision,
        applied_index,
    } = resp
    {
        return encode_value_response(id, value.as_deref(), *revision, *applied_index, out);
    }
    let opcode = match resp {
        Response::SessionRegistered { .. } => op::R_SESSION_REGISTERED,
        Response::Value { .. } => op::R_VALUE,
        Response::Written { .. } => op::R_WRITTEN,
        Response::Deleted { .. } => op::R_DELETED,
        Response::CasOk { .. } => op::R_CAS_OK,
        Response::CasFailed { .. } => op::R_CAS_FAILED,
        Response::ScanPage { .. } => op::R_SCAN_PAGE,
        Response::Len { .. } => op::R_LEN,
        Response::Status(_) => op::R_STATUS,
        Response::Members(_) => op::R_MEMBERS,
        Response::Done => op::R_DONE,
        Response::Error(_) => op::R_ERROR,
        Response::WatchEvents(_) => op::R_WATCH_EVENTS,
        Response::WatchProgress { .. } => op::R_WATCH_PROGRESS,
        Response::SnapshotBegin(_) => op::R_SNAPSHOT_BEGIN,
        Response::SnapshotChunk { .. } => op::R_SNAPSHOT_CHUNK,
    };
    let start = begin_frame(out, id, opcode);
    let mut e = Enc { out };
    match resp {
        Response::Value { .. } | Response::Done => {}
        Response::SessionRegistered { id } => e.u64(*id),
        Response::Written { revision } | Response::CasOk { revision } => e.u64(*revision),
        Response::Deleted { revision, existed } => {
            e.u64(*revision);
            e.bool(*existed);
        }
        Response::CasFailed { current } => match current {
            None => e.u8(0),
            Some((v, rev)) => {
                e.u8(1);
                e.u64(*rev);
                e.bytes(v);
            }
        },
        Response::ScanPage {
            items,
            more,
            applied_index,
        } => {
            e.u64(*applied_index);
            e.bool(*more);
            e.u32(items.len() as u32);
            for (k, v, rev) in items {
                e.u64(*rev);
                e.bytes(k);
                e.bytes(v);
            }
        }
        Response::Len { len, applied_index } => {
            e.u64(*len);
            e.u64(*applied_index);
        }
        Response::Status(s) => {
            e.u64(s.id);
            e.str(&s.role, MAX_TEXT_BYTES);
            e.u64(s.term);
            e.opt_u64(s.leader);
            e.opt_str(s.leader_addr.as_deref(), MAX_ADDR_BYTES);
            e.u64(s.commit_index);
            e.u64(s.applied_index);
            e.u64(s.last_index);
            e.u32(s.members.len() as u32);
            for m in &s.members {
                e.member(m);
            }
            e.u32(s.peers.len() as u32);
            for p in &s.peers {
                e.u64(p.id);
                e.u64(p.match_index);
                e.u64(p.lag);
                match p.snapshot_progress {
                    None => e.u8(0),
                    Some((done, total)) => {
                        e.u8(1);
                        e.u64(done);
                        e.u64(total);
                    }
                }
            }
            e.u64(s.wal_bytes);
            e.u64(s.fsync_p50_us);
            e.u64(s.fsync_p99_us);
            e.u32(s.dropped_datagrams.len() as u32);
            for (name, n) in &s.dropped_datagrams {
                e.str(name, MAX_TEXT_BYTES);
                e.u64(*n);
            }
            e.u64(s.sessions);
            e.u64(s.keys);
            e.u32(s.pid);
            e.u64(s.incarnation);
            match s.lost_entries {
                Some((term, index)) => {
                    e.u8(1);
                    e.u64(term);
                    e.u64(index);
                }
                None => e.u8(0),
            }
            e.u64(s.cluster_id);
            e.u64(s.disk_free_bytes);
            e.u64(s.disk_min_free_bytes);
            e.bool(s.disk_alarm);
        }
        Response::Members(ms) => {
            e.u32(ms.len() as u32);
            for m in ms {
                e.member(m);
            }
        }
        Response::Error(k) => encode_error(&mut e, k),
        Response::WatchEvents(events) => {
            e.u32(events.len() as u32);
            for ev in events {
                encode_event(&mut e, ev.revision(), ev.key(), ev.value());
            }
        }
        Response::WatchProgress { revision } => e.u64(*revision),
        Response::SnapshotBegin(s) => {
            e.u64(s.id);
            e.u64(s.cluster_id);
            e.u64(s.index);
            e.u64(s.term);
            e.u64(s.size);
            e.u32(s.checksum);
            e.u32(s.members.len() as u32);
            for m in &s.members {
                e.member(m);
            }
        }
        Response::SnapshotChunk { offset, data } => {
            e.u64(*offset);
            e.bytes(data);
        }
    }
    end_frame(out, start);
}

const EVENT_PUT: u8 = 1;
const EVENT_DELETE: u8 = 2;

fn encode_event(e: &mut Enc<'_>, revision: u64, key: &[u8], value: Option<&[u8]>) {
    e.u8(if value.is_some() {
        EVENT_PUT
    } else {
        EVENT_DELETE
    });
    e.u64(revision);
    e.bytes(key);
    if let Some(v) = value {
        e.bytes(v);
    }
}

/// Sets the request id of the whole frame at the front of `frame` (a frame encoded once and
/// sent to several requests, as a watch's events are).
pub fn set_request_id(frame: &mut [u8], request_id: u64) {
    set_u64(frame, 4, request_id);
}

/// The bytes one event takes in a `WatchEvents` frame.
pub fn event_encoded_len(key: &[u8], value: Option<&[u8]>) -> usize {
    1 + 8 + 4 + key.len() + value.map_or(0, |v| 4 + v.len())
}

/// A `WatchEvents` frame being written from borrowed keys and values: the server's watch path,
/// which encodes each event from its change history straight into a connection's buffer.
/// `begin`, any number of `push`, then `finish`, all on the same buffer.
pub struct EventsFrame {
    start: usize,
    count_at: usize,
    count: u32,
}

impl EventsFrame {
    pub fn begin(out: &mut Vec<u8>, request_id: u64) -> EventsFrame {
        let start = begin_frame(out, request_id, op::R_WATCH_EVENTS);
        let count_at = out.len();
        out.extend_from_slice(&[0; 4]);
        EventsFrame {
            start,
            count_at,
            count: 0,
        }
    }

    /// Appends one event: a put of `value`, or a delete when `value` is `None`.
    pub fn push(&mut self, out: &mut Vec<u8>, revision: u64, key: &[u8], value: Option<&[u8]>) {
        encode_event(&mut Enc { out }, revision, key, value);
        self.count += 1;
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn finish(self, out: &mut [u8]) {
        set_u32(out, self.count_at, self.count);
        end_frame(out, self.start);
    }
}

fn encode_error(e: &mut Enc<'_>, k: &ErrorKind) {
    match k {
        ErrorKind::NotLeader {
            leader,
            leader_addr,
        } => {
            e.u8(1);
            e.opt_u64(*leader);
            e.opt_str(leader_addr.as_deref(), MAX_ADDR_BYTES);
        }
        ErrorKind::TooLarge { what, limit } => {
            e.u8(2);
            e.str(what, MAX_TEXT_BYTES);
            e.u64(*limit);
        }
        ErrorKind::Busy => e.u8(3),
        ErrorKind::TooManyInFlight { limit } => {
            e.u8(4);
            e.u64(*limit);
        }
        ErrorKind::TooManyConnections { limit } => {
            e.u8(5);
            e.u64(*limit);
        }
        ErrorKind::SessionExpired => e.u8(6),
        ErrorKind::StaleRequest => e.u8(7),
        ErrorKind::Timeout => e.u8(8),
        ErrorKind::Unavailable(s) => {
            e.u8(9);
            e.str(s, MAX_TEXT_BYTES);
        }
        ErrorKind::Invalid(s) => {
            e.u8(10);
            e.str(s, MAX_TEXT_BYTES);
        }
        ErrorKind::ConfChange(s) => {
            e.u8(11);
            e.str(s, MAX_TEXT_BYTES);
        }
        ErrorKind::ShuttingDown => e.u8(12),
        ErrorKind::Compacted { oldest } => {
            e.u8(13);
            e.u64(*oldest);
        }
        ErrorKind::WatchOverflow { limit } => {
            e.u8(14);
            e.u64(*limit);
        }
        ErrorKind::NoSpace {
            free_bytes,
            min_free_bytes,
        } => {
            e.u8(15);
            e.u64(*free_bytes);
            e.u64(*min_free_bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding. Every read goes through `Dec`, which checks the bytes present first; every
// collection's count is checked against `count × smallest item ≤ bytes left` before allocating.

/// The frame body decoder: the project's bounds-checked `bytes::Reader`, plus this protocol's
/// options, limits and strings.
struct Dec<'a> {
    r: Reader<'a>,
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> FrameError {
        FrameError::Malformed(e.what)
    }
}

impl<'a> Dec<'a> {
    fn new(buf: &'a [u8]) -> Dec<'a> {
        Dec {
            r: Reader::new(buf),
        }
    }
    fn remaining(&self) -> usize {
        self.r.remaining()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        Ok(self.r.bytes(n)?)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.r.u8()?)
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(self.r.u32()?)
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(self.r.u64()?)
    }
    fn bool(&mut self) -> Result<bool, FrameError> {
        Ok(self.r.bool()?)
    }
    fn present(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FrameError::Malformed("option tag is not 0 or 1")),
        }
    }
    /// A `u32`-length-prefixed byte string, refused as `what` TooLarge over `limit`.
    fn bytes(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], FrameError> {
        let n = self.u32()? as usize;
        if n > limit {
            return Err(FrameError::TooLarge {
                what,
                limit: limit as u64,
                len: n as u64,
            });
        }
        self.take(n)
    }
    fn opt_bytes(
        &mut self,
        what: &'static str,
        limit: usize,
    ) -> Result<Option<&'a [u8]>, FrameError> {
        if self.present()? {
            Ok(Some(self.bytes(what, limit)?))
        } else {
            Ok(None)
        }
    }
    fn str(&mut self, limit: usize) -> Result<&'a str, FrameError> {
        let n = self.u32()? as usize;
        if n > limit {
            return Err(FrameError::Malformed("text over its limit"));
        }
        std::str::from_utf8(self.take(n)?).map_err(|_| FrameError::Malformed("text is not UTF-8"))
    }
    fn opt_str(&mut self, limit: usize) -> Result<Option<&'a str>, FrameError> {
        if self.present()? {
            Ok(Some(self.str(limit)?))
        } else {
            Ok(None)
        }
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, FrameError> {
        if self.present()? {
            Ok(Some(self.u64()?))
        } else {
            Ok(None)
        }
    }
    fn session(&mut self) -> Result<SessionTag, FrameError> {
        if self.present()? {
            Ok(Some((self.u64()?, self.u64()?)))
        } else {
            Ok(None)
        }
    }
    fn consistency(&mut self) -> Result<Consistency, FrameError> {
        match self.u8()? {
            0 => Ok(Consistency::Linearizable),
            1 => Ok(Consistency::Stale),
            _ => Err(FrameError::Malformed("unknown consistency")),
        }
    }
    /// A `u32` item count, refused unless `count × min_item_bytes` fits in the bytes left.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(FrameError::Malformed(
                "item count larger than the bytes present",
            ));
        }
        Ok(n)
    }
    fn member(&mut self) -> Result<MemberInfo, FrameError> {
        Ok(MemberInfo {
            id: self.u64()?,
            addr: self.str(MAX_ADDR_BYTES)?.to_string(),
            voter: self.bool()?,
        })
    }
    fn finish(&self) -> Result<(), FrameError> {
        if self.remaining() != 0 {
            return Err(FrameError::Malformed("trailing bytes after the body"));
        }
        Ok(())
    }
}

/// Smallest encoded `MemberInfo`: id, empty address, voter flag.
const MIN_MEMBER_BYTES: usize = 8 + 4 + 1;

/// Finds the first complete frame at the front of a stream buffer.
///
/// `Ok(None)`: more bytes are needed (fewer than the 13 header bytes, or the frame is not all
/// here yet). `Ok(Some((frame_len, request_id)))`: `buf[..frame_len]` is one whole frame.
/// `Err(TooLarge{what: "frame", len, ..})`: the header is here (so the request id can be read
/// from bytes 4..12 to answer) and the frame of `len` bytes (prefix included) is over the
/// limit. `Err(Malformed)`: the length field is below the header's 9 bytes; the stream cannot
/// be resynchronised and the connection should be closed.
pub fn split_frame(buf: &[u8], limits: &FrameLimits) -> Result<Option<(usize, u64)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = le_u32(buf, 0) as usize;
    if len < MIN_LEN_FIELD {
        return Err(FrameError::Malformed("frame length below the header size"));
    }
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let id = le_u64(buf, 4);
    let frame_len = len + 4;
    if frame_len > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            what: "frame",
            limit: limits.max_frame_bytes as u64,
            len: frame_len as u64,
        });
    }
    if buf.len() < frame_len {
        return Ok(None);
    }
    Ok(Some((frame_len, id)))
}

/// The request id of a frame whose header is present, for answering a refused frame.
pub fn frame_request_id(buf: &[u8]) -> Option<u64> {
    (buf.len() >= 12).then(|| le_u64(buf, 4))
}

/// Checks one whole frame's header; returns its request id, opcode and body decoder.
fn open_frame<'a>(frame: &'a [u8], limits: &FrameLimits) -> Result<(u64, u8, Dec<'a>), FrameError> {
    if frame.len() > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            what: "frame",
            limit: limits.max_frame_bytes as u64,
            len: frame.len() as u64,
        });
    }
    let mut d = Dec::new(frame);
    let len = d.u32()? as usize;
    if len < MIN_LEN_FIELD || len != frame.len() - 4 {
        return Err(FrameError::Malformed(
            "frame length does not match the bytes present",
        ));
    }
    let id = d.u64()?;
    let opcode = d.u8()?;
    Ok((id, opcode, d))
}

/// Decodes one whole request frame (as delimited by [`split_frame`]) into a view borrowing
/// keys, values and strings from `frame`. Keys (and scan prefixes) over `max_key_bytes` and
/// values over `max_value_bytes` are refused with `TooLarge` naming "key" or "value".
pub fn decode_request<'a>(
    frame: &'a [u8],
    limits: &FrameLimits,
) -> Result<(u64, RequestView<'a>), FrameError> {
    let (id, opcode, mut d) = open_frame(frame, limits)?;
    let kmax = limits.max_key_bytes;
    let vmax = limits.max_value_bytes;
    let req = match opcode {
        op::REGISTER_SESSION => RequestView::RegisterSession,
        op::GET => {
            let consistency = d.consistency()?;
            RequestView::Get {
                key: d.bytes("key", kmax)?,
                consistency,
            }
        }
        op::PUT => RequestView::Put {
            session: d.session()?,
            key: d.bytes("key", kmax)?,
            value: d.bytes("value", vmax)?,
        },
        op::DELETE => RequestView::Delete {
            session: d.session()?,
            key: d.bytes("key", kmax)?,
        },
        op::CAS => {
            let session = d.session()?;
            let key = d.bytes("key", kmax)?;
            let expect = match d.u8()? {
                0 => ExpectView::Value(d.bytes("value", vmax)?),
                1 => ExpectView::Absent,
                2 => ExpectView::Revision(d.u64()?),
                _ => return Err(FrameError::Malformed("unknown compare-and-swap condition")),
            };
            RequestView::Cas {
                session,
                key,
                expect,
                new: d.opt_bytes("value", vmax)?,
            }
        }
        op::SCAN => {
            let consistency = d.consistency()?;
            let limit = d.u32()?;
            RequestView::Scan {
                prefix: d.bytes("key", kmax)?,
                start_after: d.opt_bytes("key", kmax)?,
                limit,
                consistency,
            }
        }
        op::LEN => RequestView::Len {
            consistency: d.consistency()?,
        },
        op::STATUS => RequestView::Status,
        op::MEMBERS => RequestView::Members,
        op::MEMBER_ADD => {
            let id = d.u64()?;
            let learner = d.bool()?;
            RequestView::MemberAdd {
                id,
                addr: d.str(MAX_ADDR_BYTES)?,
                learner,
            }
        }
        op::MEMBER_PROMOTE => RequestView::MemberPromote { id: d.u64()? },
        op::MEMBER_REMOVE => RequestView::MemberRemove { id: d.u64()? },
        op::TRANSFER_LEADER => RequestView::TransferLeader { to: d.opt_u64()? },
        op::WATCH => {
            let from_revision = d.u64()?;
            RequestView::Watch {
                prefix: d.bytes("key", kmax)?,
                from_revision,
            }
        }
        op::CANCEL_WATCH => RequestView::CancelWatch { watch_id: d.u64()? },
        op::SNAPSHOT_SAVE => RequestView::SnapshotSave,
        op::SNAPSHOT_CHUNK => RequestView::SnapshotChunk {
            id: d.u64()?,
            offset: d.u64()?,
        },
        _ => return Err(FrameError::Malformed("unknown request opcode")),
    };
    d.finish()?;
    Ok((id, req))
}

/// [`decode_request`], copied into an owned [`Request`].
pub fn decode_request_owned(
    frame: &[u8],
    limits: &FrameLimits,
) -> Result<(u64, Request), FrameError> {
    let (id, v) = decode_request(frame, limits)?;
    Ok((id, v.to_request()))
}

/// Decodes one whole response frame. Keys and values are held to the same limits as requests.
pub fn decode_response(frame: &[u8], limits: &FrameLimits) -> Result<(u64, Response), FrameError> {
    let (id, opcode, mut d) = open_frame(frame, limits)?;
    let kmax = limits.max_key_bytes;
    let vmax = limits.max_value_bytes;
    let resp = match opcode {
        op::R_SESSION_REGISTERED => Response::SessionRegistered { id: d.u64()? },
        op::R_VALUE => {
            let revision = d.u64()?;
            let applied_index = d.u64()?;
            Response::Value {
                value: d.opt_bytes("value", vmax)?.map(|v| v.to_vec()),
                revision,
                applied_index,
            }
        }
        op::R_WRITTEN => Response::Written { revision: d.u64()? },
        op::R_DELETED => Response::Deleted {
            revision: d.u64()?,
            existed: d.bool()?,
        },
        op::R_CAS_OK => Response::CasOk { revision: d.u64()? },
        op::R_CAS_FAILED => {
            let current = if d.present()? {
                let rev = d.u64()?;
                Some((d.bytes("value", vmax)?.to_vec(), rev))
            } else {
                None
            };
            Response::CasFailed { current }
        }
        op::R_SCAN_PAGE => {
            let applied_index = d.u64()?;
            let more = d.bool()?;
            let n = d.count(8 + 4 + 4)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                let rev = d.u64()?;
                let k = d.bytes("key", kmax)?.to_vec();
                let v = d.bytes("value", vmax)?.to_vec();
                items.push((k, v, rev));
            }
            Response::ScanPage {
                items,
                more,
                applied_index,
            }
        }
        op::R_LEN => Response::Len {
            len: d.u64()?,
            applied_index: d.u64()?,
        },
        op::R_STATUS => Response::Status(Box::new(decode_status(&mut d)?)),
        op::R_MEMBERS => {
            let n = d.count(MIN_MEMBER_BYTES)?;
            let mut ms = Vec::with_capacity(n);
            for _ in 0..n {
                ms.push(d.member()?);
            }
            Response::Members(ms)
        }
        op::R_DONE => Response::Done,
        op::R_ERROR => Response::Error(decode_error(&mut d)?),
        op::R_WATCH_EVENTS => {
            // The smallest event: kind, revision, an empty key.
            let n = d.count(1 + 8 + 4)?;
            let mut events = Vec::with_capacity(n);
            for _ in 0..n {
                let kind = d.u8()?;
                let revision = d.u64()?;
                let key = d.bytes("key", kmax)?.to_vec();
                events.push(match kind {
                    EVENT_PUT => WatchEvent::Put {
                        key,
                        value: d.bytes("value", vmax)?.to_vec(),
                        revision,
                    },
                    EVENT_DELETE => WatchEvent::Delete { key, revision },
                    _ => return Err(FrameError::Malformed("unknown watch event kind")),
                });
            }
            Response::WatchEvents(events)
        }
        op::R_WATCH_PROGRESS => Response::WatchProgress { revision: d.u64()? },
        op::R_SNAPSHOT_BEGIN => {
            let id = d.u64()?;
            let cluster_id = d.u64()?;
            let index = d.u64()?;
            let term = d.u64()?;
            let size = d.u64()?;
            let checksum = d.u32()?;
            let n = d.count(MIN_MEMBER_BYTES)?;
            let mut members = Vec::with_capacity(n);
            for _ in 0..n {
                members.push(d.member()?);
            }
            Response::SnapshotBegin(SnapshotInfo {
                id,
                cluster_id,
                index,
                term,
                size,
                checksum,
                members,
            })
        }
        op::R_SNAPSHOT_CHUNK => {
            let offset = d.u64()?;
            // Bounded by the frame, which the caller's limits bounded.
            let data = d.bytes("chunk", usize::MAX)?.to_vec();
            Response::SnapshotChunk { offset, data }
        }
        _ => return Err(FrameError::Malformed("unknown response opcode")),
    };
    d.finish()?;
    Ok((id, resp))
}

fn decode_status(d: &mut Dec<'_>) -> Result<Status, FrameError> {
    let id = d.u64()?;
    let role = d.str(MAX_TEXT_BYTES)?.to_string();
    let term = d.u64()?;
    let leader = d.opt_u64()?;
    let leader_addr = d.opt_str(MAX_ADDR_BYTES)?.map(str::to_string);
    let commit_index = d.u64()?;
    let applied_index = d.u64()?;
    let last_index = d.u64()?;
    let n = d.count(MIN_MEMBER_BYTES)?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        members.push(d.member()?);
    }
    let n = d.count(8 * 3 + 1)?;
    let mut peers = Vec::with_capacity(n);
    for _ in 0..n {
        let id = d.u64()?;
        let match_index = d.u64()?;
        let lag = d.u64()?;
        let snapshot_progress = if d.present()? {
            Some((d.u64()?, d.u64()?))
        } else {
            None
        };
        peers.push(PeerStatus {
            id,
            match_index,
            lag,
            snapshot_progress,
        });
    }
    let wal_bytes = d.u64()?;
    let fsync_p50_us = d.u64()?;
    let fsync_p99_us = d.u64()?;
    let n = d.count(4 + 8)?;
    let mut dropped_datagrams = Vec::with_capacity(n);
    for _ in 0..n {
        let name = d.str(MAX_TEXT_BYTES)?.to_string();
        dropped_datagrams.push((name, d.u64()?));
    }
    Ok(Status {
        id,
        role,
        term,
        leader,
        leader_addr,
        commit_index,
        applied_index,
        last_index,
        members,
        peers,
        wal_bytes,
        fsync_p50_us,
        fsync_p99_us,
        dropped_datagrams,
        sessions: d.u64()?,
        keys: d.u64()?,
        pid: d.u32()?,
        incarnation: d.u64()?,
        lost_entries: if d.present()? {
            Some((d.u64()?, d.u64()?))
        } else {
            None
        },
        cluster_id: d.u64()?,
        disk_free_bytes: d.u64()?,
        disk_min_free_bytes: d.u64()?,
        disk_alarm: d.bool()?,
    })
}

fn decode_error(d: &mut Dec<'_>) -> Result<ErrorKind, FrameError> {
    Ok(match d.u8()? {
        1 => ErrorKind::NotLeader {
            leader: d.opt_u64()?,
            leader_addr: d.opt_str(MAX_ADDR_BYTES)?.map(str::to_string),
        },
        2 => ErrorKind::TooLarge {
            what: d.str(MAX_TEXT_BYTES)?.to_string(),
            limit: d.u64()?,
        },
        3 => ErrorKind::Busy,
        4 => ErrorKind::TooManyInFlight { limit: d.u64()? },
        5 => ErrorKind::TooManyConnections { limit: d.u64()? },
        6 => ErrorKind::SessionExpired,
        7 => ErrorKind::StaleRequest,
        8 => ErrorKind::Timeout,
        9 => ErrorKind::Unavailable(d.str(MAX_TEXT_BYTES)?.to_string()),
        10 => ErrorKind::Invalid(d.str(MAX_TEXT_BYTES)?.to_string()),
        11 => ErrorKind::ConfChange(d.str(MAX_TEXT_BYTES)?.to_string()),
        12 => ErrorKind::ShuttingDown,
        13 => ErrorKind::Compacted { oldest: d.u64()? },
        14 => ErrorKind::WatchOverflow { limit: d.u64()? },
        15 => ErrorKind::NoSpace {
            free_bytes: d.u64()?,
            min_free_bytes: d.u64()?,
        },
        _ => return Err(FrameError::Malformed("unknown error kind")),
    })
}
