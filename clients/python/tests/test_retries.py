"""The retry and session rules of ``docs/PROTOCOL.md`` ("Sessions and exactly-once writes", "A
client's retry loop"), against scripted fake servers so that each case is exact: which
request was resent, with which session tag, and what the caller is told."""

from __future__ import annotations

import struct
import threading

import pytest
from zatt_harness import STATUS, FakeServer, SendThenClose, frame, session_of, status_reply, u64

from zatt.client import (
    Client,
    ConnectionFailed,
    NotLeader,
    ProtocolError,
    ServerError,
    SessionExpired,
    Unavailable,
)

QUICK = {"timeout": 3.0, "request_timeout": 0.5, "connect_timeout": 0.5}

REGISTER, GET, PUT, MEMBER_PROMOTE, MEMBER_REMOVE = 1, 2, 3, 11, 12


class Script:
    """A fake server's memory: every request it saw, and its next session id."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bytes]] = []
        self.next_session = 100
        self.lock = threading.Lock()

    def log(self, op: int, req: bytes) -> int:
        with self.lock:
            self.seen.append((op, req))
            return sum(1 for o, _ in self.seen if o == op)

    def register(self, rid: int) -> bytes:
        with self.lock:
            self.next_session += 1
            return frame(rid, 0x81, u64(self.next_session))

    def ops(self) -> list[int]:
        return [op for op, _ in self.seen]

    def put_tags(self) -> list[tuple[int, int] | None]:
        return [session_of(req) for op, req in self.seen if op == PUT]


def test_a_write_whose_answer_was_lost_is_resent_with_the_same_tag() -> None:
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == REGISTER:
            return s.register(rid)
        if op == PUT and n == 1:
            return None  # the connection drops: the client cannot know if it applied
        return frame(rid, 0x83, u64(77))

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        assert c.put("k", "v") == 77
        assert s.ops() == [REGISTER, PUT, PUT]
        assert s.put_tags() == [(101, 1), (101, 1)]
        assert c.stats.resent_after_unknown_outcome == 1
        # The next write moves on to the next seq of the same session.
        assert c.put("k", "w") == 77
        assert s.put_tags()[-1] == (101, 2)


def test_a_write_whose_answer_was_cut_mid_frame_is_resent_with_the_same_tag() -> None:
    # Goal: a reply cut short by the connection closing (the server died while writing it) is
    # an unknown outcome, as a lost connection is: the write is resent under the same tag (the
    # cluster answers the resend from its session table), not reported as a protocol error.
    # Method: the first put's reply breaks off after 15 bytes and the connection closes.
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == REGISTER:
            return s.register(rid)
        if op == PUT and n == 1:
            return SendThenClose(frame(rid, 0x83, u64(77))[:15])
        return frame(rid, 0x83, u64(77))

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        assert c.put("k", "v") == 77
        assert s.ops() == [REGISTER, PUT, PUT]
        assert s.put_tags() == [(101, 1), (101, 1)]
        assert c.stats.resent_after_unknown_outcome == 1


def test_without_sessions_a_write_whose_answer_was_cut_mid_frame_may_have_applied() -> None:
    # Goal: without a session tag, such a write is not resent, and the error says it may have
    # been applied (a connection failure, not a protocol error). (The status request that
    # proves the new connection first is answered: the put's reply is the one cut.)
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        s.log(op, req)
        if op == STATUS:
            return status_reply(rid)
        return SendThenClose(frame(rid, 0x83, u64(77))[:15])

    with FakeServer(serve) as server:
        c = Client(server.addr, sessions=False, **QUICK)  # type: ignore[arg-type]
        try:
            c.put("k", "v")
            raise AssertionError("the put cannot have succeeded")
        except ConnectionFailed as e:
            assert e.may_have_applied
            assert "mid-frame" in str(e)
        assert s.ops() == [STATUS, PUT]


def test_a_timeout_answer_is_an_unknown_outcome_too() -> None:
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == REGISTER:
            return s.register(rid)
        if op == PUT and n == 1:
            return frame(rid, 0x8C, b"\x08")  # Timeout: applied maybe
        return frame(rid, 0x83, u64(5))

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        assert c.put("k", "v") == 5
        assert s.put_tags() == [(101, 1), (101, 1)]


def test_an_expired_session_before_any_ambiguity_is_renewed_and_the_write_sent_again() -> None:
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == REGISTER:
            return s.register(rid)
        if op == PUT and n == 1:
            return frame(rid, 0x8C, b"\x06")  # SessionExpired: nothing applied
        return frame(rid, 0x83, u64(9))

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        assert c.put("k", "v") == 9
        assert s.ops() == [REGISTER, PUT, REGISTER, PUT]
        assert s.put_tags() == [(101, 1), (102, 1)]


def test_an_expired_session_after_an_unknown_outcome_may_have_applied() -> None:
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == REGISTER:
            return s.register(rid)
        if op == PUT and n == 1:
            return None  # lost: may have been applied under session 101
        return frame(rid, 0x8C, b"\x06")  # and now the cluster forgot session 101

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        try:
            c.put("k", "v")
            raise AssertionError("the put cannot have succeeded")
        except SessionExpired as e:
            assert e.may_have_applied
        # Not resent under a new session (that could apply it twice); a new session is ready.
        assert s.put_tags() == [(101, 1), (101, 1)]
        assert s.ops()[-1] == REGISTER


def test_without_sessions_a_lost_write_is_not_resent() -> None:
    # (The status request that proves the new connection first is answered: the put's reply
    # is the one lost.)
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        s.log(op, req)
        if op == STATUS:
            return status_reply(rid)
        return None

    with FakeServer(serve) as server:
        c = Client(server.addr, sessions=False, **QUICK)  # type: ignore[arg-type]
        try:
            c.put("k", "v")
            raise AssertionError("the put cannot have succeeded")
        except ConnectionFailed as e:
            assert e.may_have_applied
        assert s.ops() == [STATUS, PUT]
        assert s.put_tags() == [None]


def test_a_membership_change_whose_outcome_is_unknown_is_not_resent() -> None:
    # (The status request that proves the new connection first is answered.)
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        s.log(op, req)
        if op == STATUS:
            return status_reply(rid)
        return frame(rid, 0x8C, b"\x0c")  # ShuttingDown: applied maybe

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        try:
            c.member_remove(3)
            raise AssertionError("cannot have succeeded")
        except ServerError as e:
            assert e.kind == "shutting_down"
            assert e.may_have_applied
        assert s.ops() == [STATUS, MEMBER_REMOVE]


def test_stale_request_is_final_and_may_have_applied() -> None:
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        s.log(op, req)
        if op == REGISTER:
            return s.register(rid)
        return frame(rid, 0x8C, b"\x07")

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        try:
            c.put("k", "v")
            raise AssertionError("cannot have succeeded")
        except ServerError as e:
            assert e.kind == "stale_request"
            assert e.may_have_applied
        assert s.ops() == [REGISTER, PUT]


def test_not_leader_hints_are_followed_to_the_leader() -> None:
    leader_seen = Script()

    def lead(rid: int, op: int, req: bytes) -> bytes | None:
        leader_seen.log(op, req)
        return frame(rid, 0x82, u64(3) + u64(4) + b"\x00")

    with FakeServer(lead) as leader:
        addr = leader.addr.encode()
        hint = b"\x01" + b"\x01" + u64(2) + b"\x01" + struct.pack("<I", len(addr)) + addr
        with FakeServer(lambda rid, op, req: frame(rid, 0x8C, hint)) as follower:
            c = Client(follower.addr, **QUICK)  # type: ignore[arg-type]
            assert c.read("k") == (None, 3, 4)
            assert c.stats.hints_followed == 1
            assert c.connected_to == leader.addr
            assert leader_seen.ops() == [GET]
            # A stale read is answered by whoever is asked; a NotLeader to one is final.
            c2 = Client(follower.addr, **QUICK)  # type: ignore[arg-type]
            try:
                c2.get("k", stale=True)
                raise AssertionError("cannot have succeeded")
            except NotLeader as e:
                assert e.leader == 2
                assert e.leader_addr == leader.addr
                assert not e.may_have_applied


def test_no_leader_known_ends_in_unavailable_within_the_timeout() -> None:
    no_leader = frame(0, 0x8C, b"\x01\x00\x00")[13:]
    with FakeServer(lambda rid, op, req: frame(rid, 0x8C, no_leader)) as server:
        c = Client(server.addr, timeout=1.0, request_timeout=0.3, connect_timeout=0.3)
        try:
            c.get("k")
            raise AssertionError("cannot have succeeded")
        except Unavailable as e:
            assert "no leader" in str(e)
            assert not e.may_have_applied


TOO_MANY_CONNECTIONS = b"\x05" + u64(1024)


def test_too_many_connections_is_retried_after_a_pause() -> None:
    # An over-limit connection is answered with request id 0 and closed, before the request
    # is read: nothing was applied, so even a membership change is sent again. (Each new
    # connection is proved with a status request first, answered here: the refusals go to
    # the membership change itself.)
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == STATUS:
            return status_reply(rid)
        if n <= 2:
            return SendThenClose(frame(0, 0x8C, TOO_MANY_CONNECTIONS))
        return frame(rid, 0x8B)

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        c.member_promote(4)
        assert s.ops() == [STATUS, MEMBER_PROMOTE] * 3


def test_too_many_connections_in_answer_to_the_status_request_is_retried_after_a_pause() -> None:
    # Goal: the status request that proves a new connection before a request sent only once
    # meets the connection limit where the request itself did before (the server answers
    # the first request it reads); the request must then wait for a connection the server
    # keeps, not follow on the one it closes (its failure there would read as an unknown
    # outcome, may_have_applied). Method: the first two connections are refused at their
    # status request and closed; the membership change must succeed, sent once.
    s = Script()

    def serve(rid: int, op: int, req: bytes) -> bytes | None:
        n = s.log(op, req)
        if op == STATUS and n <= 2:
            return SendThenClose(frame(0, 0x8C, TOO_MANY_CONNECTIONS))
        if op == STATUS:
            return status_reply(rid)
        return frame(rid, 0x8B)

    with FakeServer(serve) as server:
        c = Client(server.addr, **QUICK)  # type: ignore[arg-type]
        c.member_promote(4)
        assert s.ops() == [STATUS, STATUS, STATUS, MEMBER_PROMOTE]
        assert server.connections == 3  # one per status request: the refused ones were closed


# The answers of a server that cannot serve a request for the leader and names no other
# server to ask: "not the leader, no leader known" (an election under way, or a server cut off
# from its peers) and "unavailable" (no quorum, still catching up, a transfer under way).
NO_LEADER = b"\x01\x00\x00"
UNAVAILABLE = b"\x09" + struct.pack("<I", len(b"not caught up")) + b"not caught up"
KNOWS_NO_LEADER = pytest.mark.parametrize(
    "refusal", [NO_LEADER, UNAVAILABLE], ids=["not_leader_without_a_leader", "unavailable"]
)


@KNOWS_NO_LEADER
def test_a_server_that_knows_no_leader_is_left_for_the_next_endpoint(refusal: bytes) -> None:
    # Goal: a server that answers this way for as long as it is cut off must not hold the
    # client (the connection succeeds, so reconnecting "to the endpoint that last worked"
    # would pick it every time). Method: it is the first endpoint and the client's
    # connection; a fake leader is the second. The write must succeed there, the refusing
    # server must have been asked once only, and the client must stay with the leader.
    refusing, leading = Script(), Script()

    def refuse(rid: int, op: int, req: bytes) -> bytes | None:
        refusing.log(op, req)
        return frame(rid, 0x8C, refusal)

    def lead(rid: int, op: int, req: bytes) -> bytes | None:
        leading.log(op, req)
        if op == REGISTER:
            return leading.register(rid)
        if op == PUT:
            return frame(rid, 0x83, u64(77))
        return frame(rid, 0x82, u64(3) + u64(4) + b"\x00")

    with FakeServer(refuse) as first, FakeServer(lead) as second:
        c = Client([first.addr, second.addr], **QUICK)  # type: ignore[arg-type]
        assert c.connected_to == first.addr
        assert c.put("k", "v") == 77
        assert refusing.ops() == [REGISTER]
        assert leading.ops() == [REGISTER, PUT]
        assert leading.put_tags() == [(101, 1)]
        assert c.connected_to == second.addr
        assert c.read("k") == (None, 3, 4)
        assert refusing.ops() == [REGISTER]


@KNOWS_NO_LEADER
def test_a_write_resent_after_its_server_was_cut_off_applies_once_via_the_next(
    refusal: bytes,
) -> None:
    # Goal: a session-tagged write whose answer was lost, and whose server then knows no
    # leader, goes to the next endpoint under the same (session, seq), so that the cluster
    # answers it from its session table rather than applying it again. Method: two fakes
    # share one session table, as replicas would; the first applies the write, drops the
    # connection, and refuses the resend; the second answers from the table.
    lock = threading.Lock()
    applied: dict[tuple[int, int], int] = {}  # (session, seq) -> the write's revision
    old, new = Script(), Script()

    def apply(req: bytes) -> int:
        tag = session_of(req)
        assert tag is not None, "a write sent without its session tag"
        with lock:
            if tag not in applied:
                applied[tag] = 40 + len(applied)
            return applied[tag]

    def old_leader(rid: int, op: int, req: bytes) -> bytes | None:
        n = old.log(op, req)
        if op == REGISTER:
            return old.register(rid)
        if op == PUT and n == 1:
            apply(req)
            return None  # applied, and the answer lost with the connection
        return frame(rid, 0x8C, refusal)  # cut off from the others since

    def new_leader(rid: int, op: int, req: bytes) -> bytes | None:
        new.log(op, req)
        if op == PUT:
            return frame(rid, 0x83, u64(apply(req)))
        return frame(rid, 0x8C, b"\x0a" + struct.pack("<I", 4) + b"test")  # Invalid

    with FakeServer(old_leader) as first, FakeServer(new_leader) as second:
        c = Client([first.addr, second.addr], **QUICK)  # type: ignore[arg-type]
        assert c.put("k", "v") == 40
        assert applied == {(101, 1): 40}
        assert old.put_tags() == [(101, 1), (101, 1)]
        assert new.ops() == [PUT]
        assert new.put_tags() == [(101, 1)]
        assert c.stats.resent_after_unknown_outcome == 1
        assert c.connected_to == second.addr
        # The session goes on at the next seq, on the server that serves.
        assert c.put("k", "w") == 41
        assert new.put_tags()[-1] == (101, 2)


@KNOWS_NO_LEADER
def test_when_no_endpoint_knows_a_leader_each_is_asked_and_the_call_ends_unavailable(
    refusal: bytes,
) -> None:
    # Goal: the client goes round every endpoint (not the first one only) and, when none can
    # serve, ends with Unavailable, nothing applied. Method: two fakes that always refuse.
    a, b = Script(), Script()

    def refuse_a(rid: int, op: int, req: bytes) -> bytes | None:
        a.log(op, req)
        return frame(rid, 0x8C, refusal)

    def refuse_b(rid: int, op: int, req: bytes) -> bytes | None:
        b.log(op, req)
        return frame(rid, 0x8C, refusal)

    with FakeServer(refuse_a) as first, FakeServer(refuse_b) as second:
        c = Client([first.addr, second.addr], timeout=1.0, request_timeout=0.3, connect_timeout=0.3)
        try:
            c.get("k")
            raise AssertionError("cannot have succeeded")
        except Unavailable as e:
            assert not e.may_have_applied
            assert ("no leader" if refusal == NO_LEADER else "not caught up") in str(e)
        assert a.ops() and set(a.ops()) == {GET}
        assert b.ops() and set(b.ops()) == {GET}


GARBAGE = b"\xde\xad\xbe\xef" * 16  # no response frame: another service on the port


def test_a_server_that_answers_garbage_is_left_for_the_next_endpoint() -> None:
    # Goal: bytes that are not this protocol from one endpoint (a wrong port in the list)
    # send the next attempt to the next endpoint, as no answer in time does, rather than
    # to the same server until the timeout. Method: the garbling server goes first and
    # accepts connections; a fake leader second. A read and a write must succeed there, the
    # garbling server asked once only.
    garbling, leading = Script(), Script()

    def garble(rid: int, op: int, req: bytes) -> bytes | None:
        garbling.log(op, req)
        return GARBAGE

    def lead(rid: int, op: int, req: bytes) -> bytes | None:
        leading.log(op, req)
        if op == REGISTER:
            return leading.register(rid)
        if op == PUT:
            return frame(rid, 0x83, u64(77))
        return frame(rid, 0x82, u64(3) + u64(4) + b"\x00")

    with FakeServer(garble) as first, FakeServer(lead) as second:
        c = Client([first.addr, second.addr], **QUICK)  # type: ignore[arg-type]
        assert c.connected_to == first.addr
        assert c.read("k") == (None, 3, 4)
        assert garbling.ops() == [GET]
        assert c.connected_to == second.addr
        assert c.put("k", "v") == 77
        assert leading.ops() == [GET, REGISTER, PUT]
        assert garbling.ops() == [GET]


@pytest.mark.parametrize("answer", [GARBAGE, b""], ids=["garbage", "silence"])
def test_a_write_sent_once_does_not_go_to_a_server_that_has_not_answered(answer: bytes) -> None:
    # Goal: a write with sessions off is sent once only, with the whole operation's time; on a
    # new connection it must not go to a server that answers bytes that are not this
    # protocol (a wrong port in the list) or nothing (a paused or hung server): it would
    # fail "may have applied". The status request that proves the connection first meets
    # that server instead, and the write goes to the next endpoint. Method: such a server
    # first, a fake leader second; the put must be applied there once, and the first server
    # must have been sent the status request only.
    first_seen, leading = Script(), Script()

    def unanswering(rid: int, op: int, req: bytes) -> bytes | None:
        first_seen.log(op, req)
        return answer

    def lead(rid: int, op: int, req: bytes) -> bytes | None:
        leading.log(op, req)
        if op == STATUS:
            return status_reply(rid)
        return frame(rid, 0x83, u64(77))

    with FakeServer(unanswering) as first, FakeServer(lead) as second:
        c = Client([first.addr, second.addr], sessions=False, **QUICK)  # type: ignore[arg-type]
        assert c.connected_to == first.addr
        assert c.put("k", "v") == 77
        assert first_seen.ops() == [STATUS]
        assert leading.ops() == [STATUS, PUT]
        assert leading.put_tags() == [None]
        assert c.connected_to == second.addr
        # The connection has answered since: the next write goes out without a status first.
        assert c.put("k", "w") == 77
        assert leading.ops() == [STATUS, PUT, PUT]


def test_when_every_endpoint_answers_garbage_the_call_ends_before_its_timeout() -> None:
    # Goal: the documented early stop ("once every endpoint has sent bytes that are not this
    # protocol, waiting cannot help") is reached: each endpoint is tried once, then the call
    # ends with ProtocolError, nothing applied. Method: two garbling servers, and a timeout
    # far longer than the attempts take; the proof is each server asked exactly once (a
    # client that waited out the timeout would have asked again and again).
    a, b = Script(), Script()

    def garble_a(rid: int, op: int, req: bytes) -> bytes | None:
        a.log(op, req)
        return GARBAGE

    def garble_b(rid: int, op: int, req: bytes) -> bytes | None:
        b.log(op, req)
        return GARBAGE

    with FakeServer(garble_a) as first, FakeServer(garble_b) as second:
        c = Client([first.addr, second.addr], timeout=10.0, request_timeout=5.0)
        try:
            c.get("k")
            raise AssertionError("cannot have succeeded")
        except ProtocolError as e:
            assert not e.may_have_applied
            assert "not the Zatt protocol" in str(e)
        assert a.ops() == [GET]
        assert b.ops() == [GET]
