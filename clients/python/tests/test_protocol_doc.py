"""The Python codec against ``docs/PROTOCOL.md``: every golden request frame is exactly what
``zatt.wire`` encodes for the value listed here, every golden response frame decodes to the
value listed here, and every opcode and error kind is covered. The Rust codec is held to the
same frames by ``tests/protocol_doc.rs``, so the two clients speak the same bytes."""

from __future__ import annotations

import re

import pytest
from zatt_harness import REPO, golden_frames

from zatt import wire
from zatt.wire import Member, PeerStatus, Revision

DOC = (REPO / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")

FRAMES = golden_frames()

REQUESTS: dict[str, tuple[int, wire.Request]] = {
    "request/register_session": (1, wire.RegisterSession()),
    "request/get": (2, wire.Get(b"greeting")),
    "request/get_stale": (3, wire.Get(b"greeting", stale=True)),
    "request/put": (42, wire.Put(b"k", b"v", (7, 3))),
    "request/delete": (43, wire.Delete(b"k")),
    "request/cas_value": (44, wire.Cas(b"k", b"v", b"w", (7, 4))),
    "request/cas_absent": (45, wire.Cas(b"k", None, b"v")),
    "request/cas_revision": (46, wire.Cas(b"k", Revision(12), None, (7, 5))),
    "request/scan": (47, wire.Scan(b"app/", 100, b"app/b")),
    "request/len": (48, wire.Len(stale=True)),
    "request/status": (49, wire.StatusRequest()),
    "request/members": (50, wire.Members()),
    "request/member_add": (51, wire.MemberAdd(4, "127.0.0.1:5257")),
    "request/member_promote": (52, wire.MemberPromote(4)),
    "request/member_remove": (53, wire.MemberRemove(4)),
    "request/transfer_leader": (54, wire.TransferLeader(2)),
    "request/transfer_leader_any": (55, wire.TransferLeader(None)),
    "request/watch": (56, wire.Watch(b"app/", 20)),
    "request/watch_now": (57, wire.Watch(b"", 0)),
    "request/cancel_watch": (58, wire.CancelWatch(56)),
    "request/snapshot_save": (56, wire.SnapshotSave()),
    "request/snapshot_chunk": (57, wire.SnapshotChunk(7, 1 << 20)),
}

STATUS = wire.Status(
    id=1,
    role="leader",
    term=3,
    leader=1,
    leader_addr="127.0.0.1:5254",
    commit_index=20,
    applied_index=20,
    last_index=21,
    members=[
        Member(1, "127.0.0.1:5254", True),
        Member(2, "127.0.0.1:5255", True),
        Member(3, "127.0.0.1:5256", False),
    ],
    peers=[PeerStatus(2, 21, 0, None), PeerStatus(3, 0, 21, (4096, 65536))],
    wal_bytes=1 << 20,
    fsync_p50_us=180,
    fsync_p99_us=420,
    dropped_datagrams=[("bad_tag", 2)],
    sessions=1,
    keys=5,
    pid=12345,
    incarnation=0x1122334455667788,
    lost_entries=(3, 22),
    cluster_id=0x0123456789ABCDEF,
    disk_free_bytes=10 << 30,
    disk_min_free_bytes=256 << 20,
    disk_alarm=False,
)

E = wire.ErrorReply
RESPONSES: dict[str, tuple[int, wire.Response]] = {
    "response/session_registered": (1, wire.SessionRegistered(7)),
    "response/value": (2, wire.Value(b"hello", 12, 15)),
    "response/value_absent": (3, wire.Value(None, 0, 15)),
    "response/written": (42, wire.Written(16)),
    "response/deleted": (43, wire.Deleted(17, True)),
    "response/cas_ok": (44, wire.CasOk(18)),
    "response/cas_failed": (45, wire.CasFailedReply((b"v", 16))),
    "response/cas_failed_absent": (46, wire.CasFailedReply(None)),
    "response/scan_page": (
        47,
        wire.ScanPage([(b"app/c", b"3", 9), (b"app/d", b"4", 10)], True, 20),
    ),
    "response/len": (48, wire.LenReply(5, 20)),
    "response/status": (49, wire.StatusReply(STATUS)),
    "response/members": (
        50,
        wire.MembersReply([Member(1, "127.0.0.1:5254", True), Member(4, "127.0.0.1:5257", False)]),
    ),
    "response/done": (51, wire.Done()),
    "response/error_not_leader": (42, E(1, leader=2, leader_addr="127.0.0.1:5255")),
    "response/error_not_leader_unknown": (42, E(1)),
    "response/error_too_large": (42, E(2, what="value", limit=1 << 20)),
    "response/error_busy": (42, E(3)),
    "response/error_too_many_in_flight": (42, E(4, limit=1024)),
    "response/error_too_many_connections": (0, E(5, limit=1024)),
    "response/error_session_expired": (42, E(6)),
    "response/error_stale_request": (42, E(7)),
    "response/error_timeout": (42, E(8)),
    "response/error_unavailable": (42, E(9, detail="no leader")),
    "response/error_invalid": (42, E(10, detail="unknown request opcode")),
    "response/error_conf_change": (
        51,
        E(11, detail="the learner has not caught up with the leader yet"),
    ),
    "response/error_shutting_down": (42, E(12)),
    "response/watch_events": (
        56,
        wire.WatchEvents(
            [wire.WatchEvent(b"app/a", b"1", 20), wire.WatchEvent(b"app/b", None, 22)]
        ),
    ),
    "response/watch_progress": (56, wire.WatchProgress(25)),
    "response/error_compacted": (56, E(13, oldest=1001)),
    "response/error_watch_overflow": (56, E(14, limit=8 << 20)),
    "response/error_no_space": (42, E(15, free_bytes=1 << 20, min_free_bytes=256 << 20)),
    "response/snapshot_begin": (
        56,
        wire.SnapshotBegin(
            7,
            0x0123456789ABCDEF,
            20,
            3,
            1234,
            0xDEADBEEF,
            [
                Member(1, "127.0.0.1:5254", True),
                Member(2, "127.0.0.1:5255", True),
                Member(3, "127.0.0.1:5256", True),
            ],
        ),
    ),
    "response/snapshot_chunk": (57, wire.SnapshotChunkReply(1 << 20, b"ZKVS")),
}


def test_the_document_and_this_test_list_the_same_golden_frames() -> None:
    assert set(FRAMES) == set(REQUESTS) | set(RESPONSES)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_golden_request_is_what_the_client_encodes(name: str) -> None:
    rid, req = REQUESTS[name]
    assert req.encode(rid).hex() == FRAMES[name].hex()


@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_golden_response_decodes_to_its_value(name: str) -> None:
    frame = FRAMES[name]
    n = wire.frame_length(frame, 0, 1 << 20)
    assert n == len(frame)
    assert wire.decode_response(frame) == RESPONSES[name]


def test_every_opcode_and_error_kind_has_a_golden_frame() -> None:
    request_ops = {req.opcode for _, req in REQUESTS.values()}
    assert request_ops == set(range(1, 18))
    response_ops = {FRAMES[name][12] for name in RESPONSES}
    assert response_ops == set(range(0x81, 0x8F)) | {0x90, 0x91}
    error_kinds = {r.code for _, r in RESPONSES.values() if isinstance(r, wire.ErrorReply)}
    assert error_kinds == set(wire.ERROR_NAMES)


def test_may_have_applied_matches_the_document_s_error_table() -> None:
    # The table's "applied" column: maybe for StaleRequest, Timeout and ShuttingDown only.
    rows = re.findall(r"^\| (\d+) \| (\w+) \|[^|]*\| (no|maybe) \|", DOC, re.M)
    assert len(rows) == 15
    for code, name, applied in rows:
        assert wire.ERROR_NAMES[int(code)].replace("_", "") == name.lower()
        assert E(int(code)).may_have_applied == (applied == "maybe"), name
