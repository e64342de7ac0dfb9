"""Hostile and broken servers: whatever bytes come back (garbage, truncated frames, absurd
lengths, fields that lie, silence), the client raises a ``ZattError`` within its timeout and
never hangs, crashes with another exception, or allocates by a length it has not checked."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from collections.abc import Callable

import pytest
from zatt_harness import STATUS, FakeServer, frame, golden_frames, status_reply, u64

from zatt import wire
from zatt.client import Client, ProtocolError, Timeout, Unavailable, ZattError

# Short timeouts: every scenario ends by itself within about a second.
QUICK = {"timeout": 1.0, "request_timeout": 0.3, "connect_timeout": 0.3}


def outcome(call: Callable[[], object]) -> BaseException | None:
    """Runs ``call`` in a thread; returns what it raised. A call still running after 30 s is a
    hang, which is the failure this file exists to catch."""
    result: list[BaseException | None] = [None]

    def run() -> None:
        try:
            call()
        except BaseException as e:
            result[0] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the client hung"
    return result[0]


def answering(reply: Callable[[int], bytes | None], close: bool = False) -> FakeServer:
    return FakeServer(lambda rid, op, req: reply(rid), close_after_reply=close)


SCENARIOS: dict[str, Callable[[int], bytes | None]] = {
    "garbage": lambda rid: b"\xde\xad\xbe\xef" * 16,
    "length below the header": lambda rid: struct.pack("<I", 3) + b"\x00" * 20,
    "absurd length": lambda rid: struct.pack("<IQB", 0xFFFFFFFF, rid, 0x82),
    "unknown opcode": lambda rid: frame(rid, 0x7F, b""),
    "truncated body": lambda rid: frame(rid, 0x82, u64(1)),
    "length field larger than the frame then silence": lambda rid: (
        struct.pack("<IQB", 100, rid, 0x82) + u64(1)
    ),
    "value length past the frame": lambda rid: frame(
        rid, 0x82, u64(1) + u64(1) + b"\x01" + struct.pack("<I", 0x7FFFFFFF) + b"x"
    ),
    "option tag 2": lambda rid: frame(rid, 0x82, u64(1) + u64(1) + b"\x02"),
    "bool 7": lambda rid: frame(rid, 0x84, u64(1) + b"\x07"),
    "trailing bytes": lambda rid: frame(rid, 0x83, u64(1) + b"extra"),
    "scan count far past the bytes": lambda rid: frame(
        rid, 0x87, u64(1) + b"\x00" + struct.pack("<I", 0xFFFFFFFF)
    ),
    "status role not UTF-8": lambda rid: frame(
        rid, 0x89, u64(1) + struct.pack("<I", 2) + b"\xff\xfe"
    ),
    "text over its limit": lambda rid: frame(
        rid, 0x8C, b"\x0a" + struct.pack("<I", 5000) + b"x" * 5000
    ),
    "unknown error kind": lambda rid: frame(rid, 0x8C, b"\x63"),
    "wrong response type": lambda rid: frame(rid, 0x8B),
    "answers for another request id": lambda rid: frame(rid + 1000, 0x83, u64(1)),
    "silence": lambda rid: b"",
    "closes at once": lambda rid: None,
    "truncated frame then silence": lambda rid: frame(rid, 0x83, u64(1))[:10],
}


def test_a_frame_cut_by_a_closed_connection_is_a_dropped_connection() -> None:
    # Goal: a reply cut short by the connection closing (its server died while writing it) is
    # the connection failing, as the Rust client takes it: the read is asked again, after a
    # pause, until the timeout, and what is said at the end names the cut; it is no sign of a
    # peer that speaks another protocol. Method: a server that always sends the first 15 bytes
    # of a reply and hangs up; the read must end Unavailable having been sent more than once.
    with answering(lambda rid: frame(rid, 0x82, u64(1))[:15], close=True) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        e = outcome(lambda: c.get("k"))
        assert isinstance(e, Unavailable), repr(e)
        assert "closed the connection mid-frame" in str(e)
        assert not e.may_have_applied
        assert c.stats.resent_after_unknown_outcome >= 1, c.stats
        assert server.connections >= 2


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_broken_server_gives_a_clean_zatt_error(name: str) -> None:
    with answering(SCENARIOS[name]) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        for call in (lambda: c.get("k"), c.status):
            e = outcome(call)
            assert isinstance(e, ZattError), f"{name}: {e!r}"
            assert not e.may_have_applied, f"{name}: a read cannot have applied anything"
        c.close()


def test_a_write_to_a_broken_server_may_have_applied_once_it_was_sent() -> None:
    # The server swallows the request and answers garbage: the client cannot know. (It
    # answers the status request that proves the new connection first, as a server does:
    # the write is what it garbles.)
    def serve(rid: int, op: int, req: bytes) -> bytes:
        return status_reply(rid) if op == STATUS else b"\x01\x00\x00\x00" + b"\x00" * 9

    with FakeServer(serve) as server:
        c = Client(server.addr, sessions=False, **QUICK)  # type: ignore[arg-type]
        e = outcome(lambda: c.put("k", "v"))
        assert isinstance(e, ZattError)
        assert e.may_have_applied


def test_an_absurd_length_is_refused_without_waiting_for_its_bytes() -> None:
    # With a long timeout, a client that waited for 4 GiB would report Timeout, not this.
    with answering(lambda rid: struct.pack("<IQB", 0xFFFFFFF0, rid, 0x82)) as server:
        c = Client(server.addr, timeout=20.0, request_timeout=20.0, max_frame_bytes=1 << 20)
        e = outcome(lambda: c.get("k"))
        assert isinstance(e, ProtocolError), repr(e)
        assert "over the limit" in str(e)
        assert "not the Zatt protocol" in str(e)


def test_silence_is_a_timeout_and_a_closed_port_is_unavailable() -> None:
    with answering(lambda rid: b"") as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        assert isinstance(outcome(lambda: c.get("k")), Timeout)
    # A port bound but not listening refuses connections, and no one else can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{closed.getsockname()[1]}"
        e = outcome(lambda: Client(addr, **QUICK))  # type: ignore[arg-type]
        assert isinstance(e, Unavailable), repr(e)
        assert "refused" in str(e)


def test_a_leader_hint_that_is_not_an_address_falls_back_to_the_endpoints() -> None:
    # Goal: a NotLeader hint this client cannot dial, here no address at all, does not end the
    # call: a hint is a server's word, possibly stale, and the endpoints are tried instead, as
    # the Rust client does. Method: the only endpoint answers the first read with a hint of
    # "nowhere", then (the leader since) serves; the read must succeed there, asked twice.
    body = b"\x01" + b"\x01" + u64(2) + b"\x01" + struct.pack("<I", 7) + b"nowhere"
    asked: list[int] = []

    def serve(rid: int, op: int, req: bytes) -> bytes:
        asked.append(op)
        if len(asked) == 1:
            return frame(rid, 0x8C, body)
        return frame(rid, 0x82, u64(3) + u64(4) + b"\x00")

    with FakeServer(serve) as server:
        c = Client(server.addr, timeout=10.0, request_timeout=5.0, connect_timeout=5.0)
        assert c.read("k") == (None, 3, 4)
        assert asked == [2, 2]
        assert c.stats.hints_followed == 1
        assert c.connected_to == server.addr


def test_a_leader_hint_that_cannot_be_dialled_sends_the_client_on_to_its_other_endpoints() -> None:
    # Goal: a follower that names the leader by an address this client cannot reach (the
    # address the servers know each other by, seen from elsewhere) must not hold the client:
    # it goes on to its other endpoints, where it may reach the leader under another address.
    # Method: endpoints [follower, leader]; the follower always names the leader as a refused
    # port; the read must succeed on the leader, the follower asked once.
    hint = b"127.0.0.1:1"  # nothing listens on port 1
    body = b"\x01" + b"\x01" + u64(2) + b"\x01" + struct.pack("<I", len(hint)) + hint
    follower_asked: list[int] = []

    def follow(rid: int, op: int, req: bytes) -> bytes:
        follower_asked.append(op)
        return frame(rid, 0x8C, body)

    def lead(rid: int, op: int, req: bytes) -> bytes:
        return frame(rid, 0x82, u64(3) + u64(4) + b"\x00")

    with FakeServer(follow) as follower, FakeServer(lead) as leader:
        c = Client([follower.addr, leader.addr], timeout=5.0, request_timeout=2.0)
        assert c.connected_to == follower.addr
        assert c.read("k") == (None, 3, 4)
        assert follower_asked == [2]
        assert c.connected_to == leader.addr


def test_a_leader_the_client_cannot_reach_is_named_when_the_call_fails() -> None:
    # Goal: with no other way to the leader, the call fails saying which address the servers
    # name and why it cannot be reached, not with a bare timeout. Method: the only endpoint
    # names the leader as a refused port; the read fails as unavailable, naming it.
    hint = b"127.0.0.1:1"  # nothing listens on port 1
    body = b"\x01" + b"\x01" + u64(2) + b"\x01" + struct.pack("<I", len(hint)) + hint

    def follow(rid: int, op: int, req: bytes) -> bytes:
        return frame(rid, 0x8C, body)

    with FakeServer(follow) as follower:
        c = Client(follower.addr, timeout=2.0, request_timeout=1.0)
        with pytest.raises(Unavailable) as e:
            c.read("k")
        assert "the servers name the leader 127.0.0.1:1, which this client cannot reach" in str(
            e.value
        )


def test_the_decoder_survives_every_truncation_and_bit_flip_of_the_golden_frames() -> None:
    rng = random.Random(12)
    for name, good in golden_frames().items():
        if not name.startswith("response/"):
            continue
        for cut in range(len(good)):
            with pytest.raises(wire.FrameError):
                wire.decode_response(good[:cut])
        for _ in range(200):
            bad = bytearray(good)
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
            with contextlib.suppress(wire.FrameError):
                wire.decode_response(bytes(bad))


def test_the_decoder_survives_random_frames() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        body = rng.randbytes(rng.randrange(0, 64))
        data = frame(1, rng.choice([*range(0x80, 0x8E), rng.randrange(256)]), body)
        try:
            n = wire.frame_length(data, 0, 1 << 20)
            assert n == len(data)
            wire.decode_response(data)
        except wire.FrameError:
            pass
