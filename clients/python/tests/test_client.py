"""Each ``Client`` operation against a real 3-server cluster started by the test itself."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from zatt_harness import Cluster

from zatt.client import (
    CasFailed,
    Client,
    ConfigError,
    KeyValue,
    Revision,
    TooLarge,
    ZattError,
)


def follower_of(cluster: Cluster) -> str:
    leader = cluster.wait_leader()
    return next(n.addr for n in cluster.nodes if n.id != leader)


def test_put_get_delete_through_any_member(cluster: Cluster) -> None:
    with Client(follower_of(cluster)) as c:
        rev = c.put("client/greeting", "hello")
        assert rev > 0
        assert c.get("client/greeting") == b"hello"
        reply = c.read("client/greeting")
        assert reply.value == b"hello"
        assert reply.revision == rev
        assert reply.applied_index >= rev
        # The follower redirected the write to the leader, and the client followed.
        assert c.stats.hints_followed >= 1
        assert c.delete("client/greeting") is True
        assert c.delete("client/greeting") is False
        assert c.get("client/greeting") is None
        assert c.read("client/greeting") == (None, 0, c.read("client/greeting").applied_index)


def test_stale_reads_are_served_by_the_server_asked(cluster: Cluster) -> None:
    follower = follower_of(cluster)
    with Client(cluster.endpoints) as writer:
        rev = writer.put("client/stale", "v1")
    with Client(follower) as c:
        # A stale read never leaves the follower it is connected to; the follower applies
        # the write within a few heartbeats.
        deadline = time.monotonic() + 10
        r = c.read("client/stale", stale=True)
        while r.applied_index < rev and time.monotonic() < deadline:
            time.sleep(0.01)
            r = c.read("client/stale", stale=True)
        assert r.value == b"v1"
        assert c.connected_to == follower
        assert c.stats.hints_followed == 0


def test_bytes_keys_and_values_are_exact(cluster: Cluster) -> None:
    with Client(cluster.endpoints) as c:
        c.put(b"client/\xff\x00", b"\x00\xfe\xff")
        assert c.get(b"client/\xff\x00") == b"\x00\xfe\xff"
        c.put("client/\u00e9", "\u2603")
        assert c.get("client/\u00e9") == "\u2603".encode()


def test_compare_and_swap_in_each_form(cluster: Cluster) -> None:
    with Client(cluster.endpoints) as c:
        rev = c.cas("client/cas", None, "1")  # create only if absent
        with pytest.raises(CasFailed) as e:
            c.cas("client/cas", None, "again")
        assert e.value.current == (b"1", rev)
        assert not e.value.may_have_applied
        rev2 = c.cas("client/cas", "1", "2")
        with pytest.raises(CasFailed) as e:
            c.cas("client/cas", "1", "3")
        assert e.value.current_value == b"2"
        assert e.value.current_revision == rev2
        rev3 = c.cas("client/cas", Revision(rev2), b"3")
        with pytest.raises(CasFailed):
            c.cas("client/cas", Revision(rev2), b"4")
        c.cas("client/cas", Revision(rev3), None)  # delete if unchanged
        assert c.get("client/cas") is None
        with pytest.raises(CasFailed) as e:
            c.cas("client/cas", "3", "4")
        assert e.value.current is None
        c.cas("client/cas", Revision(0), "back")  # revision 0 matches an absent key
        assert c.get("client/cas") == b"back"


def test_scan_pages_prefixes_limits_and_resumption(cluster: Cluster) -> None:
    with Client(cluster.endpoints, scan_page_size=7) as c:
        for i in range(25):
            c.put(f"scan/{i:03}", f"v{i}")
        c.put("scan0", "outside the prefix")
        items = list(c.scan("scan/"))
        assert [kv.key for kv in items] == [f"scan/{i:03}".encode() for i in range(25)]
        assert items[3] == KeyValue(b"scan/003", b"v3", items[3].revision)
        assert [kv.key for kv in c.scan("scan/", limit=10)] == [
            f"scan/{i:03}".encode() for i in range(10)
        ]
        assert [kv.key for kv in c.scan("scan/", start_after="scan/020")] == [
            f"scan/{i:03}".encode() for i in range(21, 25)
        ]
        stale = list(c.scan("scan/", stale=True, page_size=3))
        assert len(stale) <= 25
        everything = c.dump()
        assert everything[b"scan/024"] == b"v24"
        assert everything[b"scan0"] == b"outside the prefix"
        assert list(everything) == sorted(everything)
        assert c.len() == len(everything)
        assert c.len(stale=True) <= len(everything) + 5


def test_status_and_members(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    with Client(cluster.addr(leader)) as c:
        s = c.status()
        assert s.id == leader
        assert s.role == "leader"
        assert s.leader == leader
        assert {m.id for m in s.members} == {1, 2, 3}
        assert {p.id for p in s.peers} == {1, 2, 3} - {leader}
    with Client(follower_of(cluster)) as c:
        s = c.status()
        assert s.role == "follower"
        assert s.leader_addr == cluster.addr(leader)
        members = c.members()
        assert sorted((m.id, m.addr, m.voter) for m in members) == [
            (n.id, n.addr, True) for n in cluster.nodes
        ]
        # members() asks the leader, following the status it reads.
        assert c.connected_to == cluster.addr(leader)


def test_limits_are_the_server_s_and_refused_cleanly(cluster: Cluster) -> None:
    with Client(cluster.endpoints) as c:
        with pytest.raises(TooLarge) as e:
            c.put("client/big", b"x" * ((1 << 20) + 1))
        assert e.value.what == "value"
        assert e.value.limit == 1 << 20
        assert not e.value.may_have_applied
        with pytest.raises(TooLarge) as e:
            c.put(b"k" * 5000, "v")
        assert e.value.what == "key"
        with pytest.raises(TooLarge) as e:
            c.put("client/huge", b"x" * (3 << 20))
        assert e.value.what == "frame"
        # The connection survived all of that.
        c.put("client/after", "ok")
        assert c.get("client/after") == b"ok"


def test_without_sessions_writes_still_find_the_leader(cluster: Cluster) -> None:
    with Client(follower_of(cluster), sessions=False) as c:
        c.put("client/nosession", "x")
        assert c.get("client/nosession") == b"x"
        assert c.stats.hints_followed >= 1


def test_bad_arguments_are_refused_before_anything_is_sent(cluster: Cluster) -> None:
    with pytest.raises(ConfigError):
        Client([])
    with pytest.raises(ConfigError):
        Client("localhost")
    with pytest.raises(ConfigError):
        Client("127.0.0.1:99999")
    with pytest.raises(ConfigError):
        Client(cluster.endpoints, tls_ca="/nonexistent/ca.pem")
    with Client(cluster.endpoints) as c:
        with pytest.raises(TypeError):
            c.put("k", 4)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            c.get(4)  # type: ignore[arg-type]
        assert isinstance(ConfigError("x"), ZattError)


def test_the_context_manager_closes_and_a_closed_client_reconnects(cluster: Cluster) -> None:
    with Client(cluster.endpoints) as c:
        c.put("client/ctx", "1")
        assert c.connected_to is not None
    assert c.connected_to is None
    assert c.get("client/ctx") == b"1"
    assert c.connected_to is not None
    c.close()


def test_transfer_leader_hands_leadership_over(cluster: Cluster) -> None:
    # Last in this module: leadership moves, and the other tests' clients would follow it.
    leader = cluster.wait_leader()
    target = next(n.id for n in cluster.nodes if n.id != leader)
    with Client(cluster.endpoints) as c:
        c.transfer_leader(target)
        deadline = time.monotonic() + 20
        while cluster.wait_leader() != target and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cluster.wait_leader() == target
        c.put("client/after-transfer", "yes")
        assert c.status().id == target


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(
    zattd: Path, tmp_path: Path
) -> None:
    # Without sessions a write whose connection fails is never resent, so sending it on a
    # connection the server had already closed would fail with "may have applied". The client
    # notices the close first and reconnects.
    single = Cluster(tmp_path / "idle", 1, extra=["--idle-timeout", "200ms"])
    try:
        single.wait_leader()
        with Client(single.endpoints, sessions=False) as c:
            c.put("idle", "1")
            assert c.stats.connects == 1
            # Wait (bounded) until the server has closed the idle connection: a peek sees EOF.
            conn = c._conn
            assert conn is not None
            deadline = time.monotonic() + 20
            while True:
                try:
                    if conn._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        break
                except BlockingIOError:
                    pass
                assert time.monotonic() < deadline, "the server never closed the idle connection"
                time.sleep(0.02)
            c.put("idle", "2")
            assert c.stats.connects == 2
            assert c.get("idle") == b"2"
    finally:
        single.stop()
