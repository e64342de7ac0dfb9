"""The client protocol's bytes: request frames out, response frames in.

Owns the encoding of every request and the decoding of every response, exactly as
``docs/PROTOCOL.md`` specifies them (the golden frames there are checked against this module
by the tests). Must not touch sockets, clocks or retries (``zatt.client`` does), and must not
trust a length it has not checked: every field is checked against the bytes present before it
is read, so a hostile frame costs at most its own size and raises :class:`FrameError`.

All integers are little-endian. A frame is ``len: u32`` (the bytes after it, at least 9),
``request_id: u64``, ``opcode: u8``, then the body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Optional, Union

__all__ = [
    "FRAME_HEADER_BYTES",
    "MAX_ADDR_BYTES",
    "MAX_TEXT_BYTES",
    "Cas",
    "CasFailedReply",
    "CasOk",
    "Delete",
    "CancelWatch",
    "Deleted",
    "Done",
    "ErrorReply",
    "FrameError",
    "Get",
    "Len",
    "LenReply",
    "Member",
    "MemberAdd",
    "MemberPromote",
    "MemberRemove",
    "Members",
    "MembersReply",
    "PeerStatus",
    "Put",
    "RegisterSession",
    "Request",
    "Response",
    "Revision",
    "Scan",
    "ScanPage",
    "SessionRegistered",
    "SnapshotBegin",
    "SnapshotChunk",
    "SnapshotChunkReply",
    "SnapshotSave",
    "Status",
    "StatusReply",
    "StatusRequest",
    "TransferLeader",
    "Value",
    "Watch",
    "WatchEvent",
    "WatchEvents",
    "WatchProgress",
    "Written",
    "decode_response",
    "frame_length",
]

FRAME_HEADER_BYTES = 13
"""``len: u32``, ``request_id: u64``, ``opcode: u8``."""
MIN_LEN_FIELD = 9
MAX_TEXT_BYTES = 1024
"""Longest free-text field (error detail, role, drop reason)."""
MAX_ADDR_BYTES = 255
"""Longest member address."""

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<IQB")
_SESSION = struct.Struct("<BQQ")
_U64_MAX = (1 << 64) - 1

SessionTag = Optional[tuple[int, int]]
"""``(session id, sequence number)`` on a write, or ``None``."""


class FrameError(Exception):
    """Bytes that are not a valid frame of this protocol."""


# ----------------------------------------------------------------------------------------
# Requests


def _u64(v: int) -> bytes:
    if not 0 <= v <= _U64_MAX:
        raise ValueError(f"{v} does not fit in a u64")
    return _U64.pack(v)


def _bytes(b: bytes) -> bytes:
    return _U32.pack(len(b)) + b


def _opt_bytes(b: bytes | None) -> bytes:
    return b"\x00" if b is None else b"\x01" + _U32.pack(len(b)) + b


def _session(tag: SessionTag) -> bytes:
    if tag is None:
        return b"\x00"
    return _SESSION.pack(1, tag[0], tag[1])


def _consistency(stale: bool) -> bytes:
    return b"\x01" if stale else b"\x00"


def _frame(request_id: int, opcode: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body) + MIN_LEN_FIELD, request_id, opcode) + body


@dataclass
class RegisterSession:
    opcode = 1

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, b"")


@dataclass
class Get:
    key: bytes
    stale: bool = False
    opcode = 2

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _consistency(self.stale) + _bytes(self.key))


@dataclass
class Put:
    key: bytes
    value: bytes
    session: SessionTag = None
    opcode = 3

    def encode(self, request_id: int) -> bytes:
        body = _session(self.session) + _bytes(self.key) + _bytes(self.value)
        return _frame(request_id, self.opcode, body)


@dataclass
class Delete:
    key: bytes
    session: SessionTag = None
    opcode = 4

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _session(self.session) + _bytes(self.key))


@dataclass(frozen=True)
class Revision:
    """A compare-and-swap condition: the key was last written at this revision (0 matches
    an absent key, as no write has revision 0)."""

    revision: int


@dataclass
class Cas:
    """Writes ``new`` (deletes the key when ``None``) if ``expect`` holds: ``bytes`` means the
    key holds exactly that value, ``None`` that it is absent, a :class:`Revision` that it was
    last written at that revision."""

    key: bytes
    expect: bytes | Revision | None
    new: bytes | None
    session: SessionTag = None
    opcode = 5

    def encode(self, request_id: int) -> bytes:
        if self.expect is None:
            cond = b"\x01"
        elif isinstance(self.expect, Revision):
            cond = b"\x02" + _u64(self.expect.revision)
        else:
            cond = b"\x00" + _bytes(self.expect)
        body = _session(self.session) + _bytes(self.key) + cond + _opt_bytes(self.new)
        return _frame(request_id, self.opcode, body)


@dataclass
class Scan:
    prefix: bytes
    limit: int
    start_after: bytes | None = None
    stale: bool = False
    opcode = 6

    def encode(self, request_id: int) -> bytes:
        body = (
            _consistency(self.stale)
            + _U32.pack(self.limit)
            + _bytes(self.prefix)
            + _opt_bytes(self.start_after)
        )
        return _frame(request_id, self.opcode, body)


@dataclass
class Len:
    stale: bool = False
    opcode = 7

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _consistency(self.stale))


@dataclass
class StatusRequest:
    opcode = 8

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, b"")


@dataclass
class Members:
    opcode = 9

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, b"")


@dataclass
class MemberAdd:
    id: int
    addr: str
    learner: bool = False
    opcode = 10

    def encode(self, request_id: int) -> bytes:
        addr = self.addr.encode("utf-8")
        if len(addr) > MAX_ADDR_BYTES:
            raise ValueError(f"address longer than {MAX_ADDR_BYTES} bytes")
        body = _u64(self.id) + (b"\x01" if self.learner else b"\x00") + _bytes(addr)
        return _frame(request_id, self.opcode, body)


@dataclass
class MemberPromote:
    id: int
    opcode = 11

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _u64(self.id))


@dataclass
class MemberRemove:
    id: int
    opcode = 12

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _u64(self.id))


@dataclass
class TransferLeader:
    to: int | None = None
    opcode = 13

    def encode(self, request_id: int) -> bytes:
        body = b"\x00" if self.to is None else b"\x01" + _u64(self.to)
        return _frame(request_id, self.opcode, body)


@dataclass
class Watch:
    """Streams the changes to the keys starting with ``prefix`` from revision
    ``from_revision`` on (0: from the revision after the server's applied index)."""

    prefix: bytes
    from_revision: int = 0
    opcode = 14

    def encode(self, request_id: int) -> bytes:
        body = _u64(self.from_revision) + _bytes(self.prefix)
        return _frame(request_id, self.opcode, body)


@dataclass
class CancelWatch:
    """Ends the watch this connection opened with request id ``watch_id``."""

    watch_id: int
    opcode = 15

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _u64(self.watch_id))


@dataclass
class SnapshotSave:
    """Asks the leader for a consistent snapshot of the dictionary (a backup)."""

    opcode = 16

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, b"")


@dataclass
class SnapshotChunk:
    """The bytes of held snapshot ``id`` from ``offset`` on, from the server that took it."""

    id: int
    offset: int
    opcode = 17

    def encode(self, request_id: int) -> bytes:
        return _frame(request_id, self.opcode, _u64(self.id) + _u64(self.offset))


Request = Union[
    RegisterSession,
    Get,
    Put,
    Delete,
    Cas,
    Scan,
    Len,
    StatusRequest,
    Members,
    MemberAdd,
    MemberPromote,
    MemberRemove,
    TransferLeader,
    Watch,
    CancelWatch,
    SnapshotSave,
    SnapshotChunk,
]

# ----------------------------------------------------------------------------------------
# Responses


@dataclass(frozen=True)
class SessionRegistered:
    id: int


@dataclass(frozen=True)
class Value:
    """A read's answer: ``value`` is ``None`` when the key is absent (``revision`` 0 then);
    ``applied_index`` is the log position the answer was read at."""

    value: bytes | None
    revision: int
    applied_index: int


@dataclass(frozen=True)
class Written:
    revision: int


@dataclass(frozen=True)
class Deleted:
    revision: int
    existed: bool


@dataclass(frozen=True)
class CasOk:
    revision: int


@dataclass(frozen=True)
class CasFailedReply:
    """``current``: the key's (value, revision), or ``None`` when it is absent."""

    current: tuple[bytes, int] | None


@dataclass(frozen=True)
class ScanPage:
    """``items``: (key, value, revision) in key order; ``more`` when the page stopped at a
    limit and the scan should continue after the last key."""

    items: list[tuple[bytes, bytes, int]]
    more: bool
    applied_index: int


@dataclass(frozen=True)
class LenReply:
    len: int
    applied_index: int


@dataclass(frozen=True)
class Member:
    id: int
    addr: str
    voter: bool


@dataclass(frozen=True)
class PeerStatus:
    """A peer's replication progress, as the leader reports it; ``snapshot_progress`` is
    (bytes acknowledged, total bytes) while a snapshot is being sent."""

    id: int
    match_index: int
    lag: int
    snapshot_progress: tuple[int, int] | None = None


@dataclass(frozen=True)
class Status:
    """One server's view of itself and the cluster. ``role`` is ``leader``, ``follower``,
    ``candidate`` or ``learner``; ``peers`` is filled in by the leader only."""

    id: int
    role: str
    term: int
    leader: int | None
    leader_addr: str | None
    commit_index: int
    applied_index: int
    last_index: int
    members: list[Member] = field(default_factory=list)
    peers: list[PeerStatus] = field(default_factory=list)
    wal_bytes: int = 0
    fsync_p50_us: int = 0
    fsync_p99_us: int = 0
    dropped_datagrams: list[tuple[str, int]] = field(default_factory=list)
    sessions: int = 0
    keys: int = 0
    #: The answering server's process id (0 when unknown).
    pid: int = 0
    #: The incarnation of the server's data directory (0: none).
    incarnation: int = 0
    #: ``(term, index)``: entries the server may have acknowledged and lost, or ``None``.
    lost_entries: tuple[int, int] | None = None
    #: The cluster id every peer datagram of its cluster carries.
    cluster_id: int = 0
    #: Bytes free on its data directory's file system, and its ``--min-free-disk`` in bytes.
    disk_free_bytes: int = 0
    disk_min_free_bytes: int = 0
    #: Free space is below the minimum: as leader it refuses writes that add data (no_space).
    disk_alarm: bool = False


@dataclass(frozen=True)
class StatusReply:
    status: Status


@dataclass(frozen=True)
class MembersReply:
    members: list[Member]


@dataclass(frozen=True)
class Done:
    """A membership change or leadership transfer was accepted; a watch was cancelled."""


@dataclass(frozen=True)
class WatchEvent:
    """One change a watch reports: ``key`` set to ``value`` (a put), or deleted (``value``
    is ``None``), by the write at ``revision``."""

    key: bytes
    value: bytes | None
    revision: int

    @property
    def kind(self) -> str:
        """``"put"`` or ``"delete"``."""
        return "delete" if self.value is None else "put"


@dataclass(frozen=True)
class WatchEvents:
    """Changes a watch reports, in revision order."""

    events: list[WatchEvent]


@dataclass(frozen=True)
class WatchProgress:
    """Every change the watch is to report up to ``revision`` has been sent before this."""

    revision: int


@dataclass(frozen=True)
class SnapshotBegin:
    """A snapshot the leader took and holds for :class:`SnapshotChunk` requests: ``size`` bytes
    of data whose last 4 bytes are ``checksum``, the CRC-32 of the bytes before them."""

    id: int
    cluster_id: int
    index: int
    term: int
    size: int
    checksum: int
    members: list[Member]


@dataclass(frozen=True)
class SnapshotChunkReply:
    offset: int
    data: bytes


ERROR_NAMES = {
    1: "not_leader",
    2: "too_large",
    3: "busy",
    4: "too_many_in_flight",
    5: "too_many_connections",
    6: "session_expired",
    7: "stale_request",
    8: "timeout",
    9: "unavailable",
    10: "invalid",
    11: "conf_change",
    12: "shutting_down",
    13: "compacted",
    14: "watch_overflow",
    15: "no_space",
}


@dataclass(frozen=True)
class ErrorReply:
    """The server's refusal. ``code`` is the error kind's number (``name`` its name); the
    other fields are set for the kinds that carry them: ``leader``/``leader_addr`` for
    not_leader, ``what`` and ``limit`` for too_large, ``limit`` for too_many_in_flight,
    too_many_connections and watch_overflow, ``detail`` for unavailable, invalid and
    conf_change, ``oldest`` for compacted, ``free_bytes`` and ``min_free_bytes`` for
    no_space."""

    code: int
    leader: int | None = None
    leader_addr: str | None = None
    what: str | None = None
    limit: int | None = None
    detail: str | None = None
    oldest: int | None = None
    free_bytes: int | None = None
    min_free_bytes: int | None = None

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"error {self.code}")

    @property
    def may_have_applied(self) -> bool:
        """Whether a write that got this answer may nevertheless have been applied."""
        return self.code in (7, 8, 12)

    def message(self) -> str:
        c = self.code
        if c == 1:
            if self.leader is not None and self.leader_addr is not None:
                return f"not the leader: retry at node {self.leader} ({self.leader_addr})"
            if self.leader is not None:
                return f"not the leader: retry at node {self.leader}"
            return "not the leader and no leader known: retry shortly or at another node"
        if c == 2:
            return f"{self.what} too large: the server's limit is {self.limit} bytes"
        if c == 3:
            return "server busy (too many uncommitted writes): back off and retry"
        if c == 4:
            return f"too many requests in flight on this connection (limit {self.limit})"
        if c == 5:
            return f"server has too many connections (limit {self.limit})"
        if c == 6:
            return "session expired or unknown: register a new session and retry"
        if c == 7:
            return (
                "request older than the session's latest: it was applied or superseded "
                "earlier; do not retry it"
            )
        if c == 8:
            return "timed out waiting for commit: the write may have been applied"
        if c == 9:
            return f"unavailable ({self.detail}): retry shortly or at another node"
        if c == 10:
            return f"invalid request ({self.detail}): fix the request, retrying will not help"
        if c == 11:
            return f"membership change refused ({self.detail})"
        if c == 12:
            return "server shutting down: the request may have been applied"
        if c == 13:
            return (
                "watch start revision no longer kept: the oldest revision a watch can start "
                f"from here is {self.oldest}"
            )
        if c == 14:
            return (
                "watch cut off: its events waited unread beyond the server's limit of "
                f"{self.limit} bytes"
            )
        if c == 15:
            return (
                f"no space: the leader's disk has {self.free_bytes} bytes free, below its "
                f"--min-free-disk of {self.min_free_bytes} bytes; writes are refused until "
                "space is freed (reads and deletes work), not applied"
            )
        return self.name


Response = Union[
    SessionRegistered,
    Value,
    Written,
    Deleted,
    CasOk,
    CasFailedReply,
    ScanPage,
    LenReply,
    StatusReply,
    MembersReply,
    Done,
    ErrorReply,
    WatchEvents,
    WatchProgress,
    SnapshotBegin,
    SnapshotChunkReply,
]

# ----------------------------------------------------------------------------------------
# Decoding


class _Reader:
    """Reads fields from one frame, checking the bytes present before each read."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise FrameError("truncated")
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return s

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise FrameError("truncated")
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u32(self) -> int:
        if self.pos + 4 > len(self.buf):
            raise FrameError("truncated")
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def u64(self) -> int:
        if self.pos + 8 > len(self.buf):
            raise FrameError("truncated")
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(v)

    def flag(self, what: str) -> bool:
        b = self.u8()
        if b > 1:
            raise FrameError(f"{what} is not 0 or 1")
        return b == 1

    def boolean(self) -> bool:
        return self.flag("boolean")

    def present(self) -> bool:
        return self.flag("option tag")

    def blob(self) -> bytes:
        return self.take(self.u32())

    def opt_blob(self) -> bytes | None:
        return self.blob() if self.present() else None

    def text(self, limit: int) -> str:
        n = self.u32()
        if n > limit:
            raise FrameError("text over its limit")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("text is not UTF-8") from None

    def opt_text(self, limit: int) -> str | None:
        return self.text(limit) if self.present() else None

    def opt_u64(self) -> int | None:
        return self.u64() if self.present() else None

    def count(self, min_item_bytes: int) -> int:
        n = self.u32()
        if n * min_item_bytes > self.remaining():
            raise FrameError("item count larger than the bytes present")
        return n

    def member(self) -> Member:
        return Member(self.u64(), self.text(MAX_ADDR_BYTES), self.boolean())


_MIN_MEMBER_BYTES = 8 + 4 + 1


def frame_length(buf: bytes | bytearray, start: int, max_frame_bytes: int) -> int | None:
    """The length (prefix included) of the frame starting at ``buf[start:]`` once its length
    field is there, else ``None``. Raises :class:`FrameError` for a length field below the
    header's 9 bytes or a frame over ``max_frame_bytes``: neither can be waited out."""
    if len(buf) - start < 4:
        return None
    (n,) = _U32.unpack_from(buf, start)
    if n < MIN_LEN_FIELD:
        raise FrameError("frame length below the header size")
    if n + 4 > max_frame_bytes:
        raise FrameError(f"frame of {n + 4} bytes over the limit of {max_frame_bytes}")
    return int(n) + 4


def decode_response(frame: bytes) -> tuple[int, Response]:
    """Decodes one whole response frame (as delimited by :func:`frame_length`) into its
    request id and response."""
    if len(frame) < FRAME_HEADER_BYTES:
        raise FrameError("truncated")
    n, request_id, opcode = _HEADER.unpack_from(frame, 0)
    if n != len(frame) - 4:
        raise FrameError("frame length does not match the bytes present")
    d = _Reader(frame, FRAME_HEADER_BYTES)
    resp: Response
    if opcode == 0x82:
        rev = d.u64()
        applied = d.u64()
        resp = Value(d.opt_blob(), rev, applied)
    elif opcode == 0x83:
        resp = Written(d.u64())
    elif opcode == 0x84:
        resp = Deleted(d.u64(), d.boolean())
    elif opcode == 0x81:
        resp = SessionRegistered(d.u64())
    elif opcode == 0x85:
        resp = CasOk(d.u64())
    elif opcode == 0x86:
        if d.present():
            rev = d.u64()
            resp = CasFailedReply((d.blob(), rev))
        else:
            resp = CasFailedReply(None)
    elif opcode == 0x87:
        applied = d.u64()
        more = d.boolean()
        items = []
        for _ in range(d.count(8 + 4 + 4)):
            rev = d.u64()
            k = d.blob()
            items.append((k, d.blob(), rev))
        resp = ScanPage(items, more, applied)
    elif opcode == 0x88:
        resp = LenReply(d.u64(), d.u64())
    elif opcode == 0x89:
        resp = StatusReply(_decode_status(d))
    elif opcode == 0x8A:
        resp = MembersReply([d.member() for _ in range(d.count(_MIN_MEMBER_BYTES))])
    elif opcode == 0x8B:
        resp = Done()
    elif opcode == 0x8C:
        resp = _decode_error(d)
    elif opcode == 0x8D:
        events = []
        # The smallest event: kind, revision, an empty key.
        for _ in range(d.count(1 + 8 + 4)):
            kind = d.u8()
            rev = d.u64()
            key = d.blob()
            if kind == 1:
                events.append(WatchEvent(key, d.blob(), rev))
            elif kind == 2:
                events.append(WatchEvent(key, None, rev))
            else:
                raise FrameError(f"unknown watch event kind {kind}")
        resp = WatchEvents(events)
    elif opcode == 0x8E:
        resp = WatchProgress(d.u64())
    elif opcode == 0x90:
        sid, cluster_id, index, term, size = d.u64(), d.u64(), d.u64(), d.u64(), d.u64()
        checksum = d.u32()
        members = [d.member() for _ in range(d.count(_MIN_MEMBER_BYTES))]
        resp = SnapshotBegin(sid, cluster_id, index, term, size, checksum, members)
    elif opcode == 0x91:
        offset = d.u64()
        resp = SnapshotChunkReply(offset, d.blob())
    else:
        raise FrameError(f"unknown response opcode {opcode:#x}")
    if d.remaining() != 0:
        raise FrameError("trailing bytes after the body")
    return int(request_id), resp


def _decode_status(d: _Reader) -> Status:
    id_ = d.u64()
    role = d.text(MAX_TEXT_BYTES)
    term = d.u64()
    leader = d.opt_u64()
    leader_addr = d.opt_text(MAX_ADDR_BYTES)
    commit_index = d.u64()
    applied_index = d.u64()
    last_index = d.u64()
    members = [d.member() for _ in range(d.count(_MIN_MEMBER_BYTES))]
    peers = []
    for _ in range(d.count(8 * 3 + 1)):
        pid = d.u64()
        match_index = d.u64()
        lag = d.u64()
        progress = (d.u64(), d.u64()) if d.present() else None
        peers.append(PeerStatus(pid, match_index, lag, progress))
    wal_bytes = d.u64()
    p50 = d.u64()
    p99 = d.u64()
    dropped = []
    for _ in range(d.count(4 + 8)):
        name = d.text(MAX_TEXT_BYTES)
        dropped.append((name, d.u64()))
    sessions = d.u64()
    keys = d.u64()
    pid = d.u32()
    incarnation = d.u64()
    lost_entries = (d.u64(), d.u64()) if d.present() else None
    cluster_id = d.u64()
    disk_free = d.u64()
    disk_min = d.u64()
    disk_alarm = d.boolean()
    return Status(
        id=id_,
        role=role,
        term=term,
        leader=leader,
        leader_addr=leader_addr,
        commit_index=commit_index,
        applied_index=applied_index,
        last_index=last_index,
        members=members,
        peers=peers,
        wal_bytes=wal_bytes,
        fsync_p50_us=p50,
        fsync_p99_us=p99,
        dropped_datagrams=dropped,
        sessions=sessions,
        keys=keys,
        pid=pid,
        incarnation=incarnation,
        lost_entries=lost_entries,
        cluster_id=cluster_id,
        disk_free_bytes=disk_free,
        disk_min_free_bytes=disk_min,
        disk_alarm=disk_alarm,
    )


def _decode_error(d: _Reader) -> ErrorReply:
    code = d.u8()
    if code == 1:
        leader = d.opt_u64()
        return ErrorReply(code, leader=leader, leader_addr=d.opt_text(MAX_ADDR_BYTES))
    if code == 2:
        what = d.text(MAX_TEXT_BYTES)
        return ErrorReply(code, what=what, limit=d.u64())
    if code in (4, 5, 14):
        return ErrorReply(code, limit=d.u64())
    if code == 13:
        return ErrorReply(code, oldest=d.u64())
    if code in (9, 10, 11):
        return ErrorReply(code, detail=d.text(MAX_TEXT_BYTES))
    if code in (3, 6, 7, 8, 12):
        return ErrorReply(code)
    if code == 15:
        free = d.u64()
        return ErrorReply(code, free_bytes=free, min_free_bytes=d.u64())
    raise FrameError(f"unknown error kind {code}")
