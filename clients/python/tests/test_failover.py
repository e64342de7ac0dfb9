"""Exactly-once writes through leader kills: writers increment counters by compare-and-swap
and write fresh keys while the leader is killed with SIGKILL twice (and restarted). Nothing
acknowledged is lost, and nothing is applied twice: a compare-and-swap applied twice would be
answered "failed" on its retry and counted again by the writer, and a put applied twice would
carry a later revision than its reply reported."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from zatt_harness import Cluster, PortCut, iptables_unusable

from zatt.client import CasFailed, Client, ClientStats, ZattError


@dataclass
class Tally:
    acked: int = 0
    maybe: int = 0
    puts: list[tuple[str, int]] = field(default_factory=list)
    stats: ClientStats = field(default_factory=ClientStats)
    errors: list[str] = field(default_factory=list)


def patient(cluster: Cluster) -> Client:
    return Client(cluster.endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=30.0)


def counter_of(v: bytes | None) -> int:
    return 0 if v is None else int(v)


def writer(c: Client, name: str, stop: threading.Event, t: Tally) -> None:
    deadline = time.monotonic() + 90
    rounds = 0
    while not stop.is_set() and time.monotonic() < deadline:
        rounds += 1
        try:
            current = c.get(name)
        except ZattError as e:
            t.errors.append(str(e))
            continue
        n = counter_of(current)
        try:
            c.cas(name, current, str(n + 1))
            t.acked += 1
        except CasFailed:
            # Only this writer increments its counter: a failed condition means an earlier
            # attempt reported as "may have applied" was applied after all.
            pass
        except ZattError as e:
            if e.may_have_applied:
                t.maybe += 1
            t.errors.append(str(e))
        key = f"{name}/w{rounds:06}"
        try:
            t.puts.append((key, c.put(key, "x")))
        except ZattError as e:
            if e.may_have_applied:
                t.maybe += 1
            t.errors.append(str(e))
    t.stats = c.stats


def test_writers_through_leader_kills_lose_no_ack_and_apply_nothing_twice(
    fresh_cluster: Cluster,
) -> None:
    cluster = fresh_cluster
    first = cluster.wait_leader()
    stop = threading.Event()
    tallies = {name: Tally() for name in ("counter-a", "counter-b")}
    threads = [
        threading.Thread(target=writer, args=(patient(cluster), name, stop, t))
        for name, t in tallies.items()
    ]
    for th in threads:
        th.start()
    try:
        time.sleep(0.5)
        cluster.kill(first)
        second = cluster.wait_leader()
        time.sleep(0.5)
        cluster.restart(first)
        cluster.kill(second)
        cluster.wait_leader()
        time.sleep(0.5)
        cluster.restart(second)
        cluster.wait_leader()
        time.sleep(0.3)
    finally:
        stop.set()
        for th in threads:
            th.join(120)
    assert not any(th.is_alive() for th in threads), "a writer hung"

    with patient(cluster) as c:
        for name, t in tallies.items():
            v = counter_of(c.get(name))
            summary = f"{name}: counter {v}, acked {t.acked}, maybe {t.maybe}, {t.stats}"
            print(summary)  # shown by pytest when the test fails
            assert t.acked > 0, f"no progress: {summary}\n{cluster.logs()}"
            assert v >= t.acked, f"lost acknowledged increments: {summary}"
            assert v <= t.acked + t.maybe, f"an increment applied twice: {summary}"
            for key, rev in t.puts:
                r = c.read(key)
                assert r.value == b"x", f"{key} lost"
                assert r.revision == rev, f"{key} was applied again after its reply"


def impatient_per_attempt(endpoints: list[str]) -> Client:
    """Gives up on a silent server after half a second, with a generous overall bound."""
    return Client(endpoints, connect_timeout=0.5, request_timeout=0.5, timeout=30.0)


def test_a_server_that_accepts_but_never_answers_first_in_the_endpoints_is_left(
    cluster: Cluster,
) -> None:
    # Goal: one unresponsive endpoint (a paused or hung process, whose kernel still completes
    # TCP handshakes) must not hold every request until the timeout. Method: a loopback
    # listener nobody accepts from (the kernel answers the handshake, nobody reads) goes
    # first in the endpoints, the cluster's after it; every kind of request must succeed, and
    # the client must have resent after the silent attempt rather than waited.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        # A backlog above the attempts the timeout allows (30 s / 0.5 s): a full backlog
        # would refuse connections and let even a client without the fix move on.
        silent.listen(128)
        silent_addr = f"127.0.0.1:{silent.getsockname()[1]}"
        endpoints = [silent_addr, *cluster.endpoints]
        with impatient_per_attempt(endpoints) as c:
            assert c.connected_to == silent_addr
            assert c.put("silent-first", "1") > 0
            assert c.get("silent-first") == b"1"
            c.cas("silent-first", b"1", "2")
            assert c.delete("silent-first")
            assert c.get("silent-first") is None
            assert c.stats.resent_after_unknown_outcome >= 1, c.stats
            assert c.connected_to != silent_addr
        # A fresh client whose first request is a read moves on the same way.
        with impatient_per_attempt(endpoints) as fresh:
            assert fresh.get("silent-first") is None
            assert fresh.connected_to != silent_addr


def test_requests_sent_once_do_not_spend_their_one_attempt_on_a_server_that_never_answers(
    fresh_cluster: Cluster,
) -> None:
    # Goal: a request that is never resent (a write with sessions off, a membership change)
    # gets the whole operation's time for its one attempt, so that attempt must not go to a
    # fresh connection whose server accepts but never answers (paused or hung): it would
    # end in Timeout, may_have_applied, after the whole timeout. Method: a listener nobody
    # accepts from goes first; with sessions off, a put, then adding and removing a
    # learner, each from a new client connected to that listener, must succeed elsewhere,
    # and the put must be there once, with the revision its reply reported.
    cluster = fresh_cluster
    cluster.wait_leader()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(128)
        silent_addr = f"127.0.0.1:{silent.getsockname()[1]}"
        endpoints = [silent_addr, *cluster.endpoints]

        def once() -> Client:
            return Client(
                endpoints, sessions=False, connect_timeout=0.5, request_timeout=0.5, timeout=30.0
            )

        with once() as c:
            assert c.connected_to == silent_addr
            rev = c.put("once", "1")
            assert c.connected_to != silent_addr
            assert c.stats.resent_after_unknown_outcome == 0, c.stats
        with once() as a:
            assert a.connected_to == silent_addr
            a.member_add(9, "127.0.0.1:9", learner=True)
            assert a.connected_to != silent_addr
        with patient(cluster) as p:
            assert any(m.id == 9 and not m.voter for m in p.members())
        with once() as r:
            assert r.connected_to == silent_addr
            r.member_remove(9)
            assert r.connected_to != silent_addr
    with patient(cluster) as p:
        got = p.read("once")
        assert (got.value, got.revision) == (b"1", rev), "the put was applied again"
        assert all(m.id != 9 for m in p.members())


def test_a_paused_leader_first_in_the_endpoints_is_left_and_no_write_applies_twice(
    fresh_cluster: Cluster,
) -> None:
    # Goal: a SIGSTOPped leader at the front of the endpoints blocks nothing once the others
    # have elected a new leader, and a write whose first attempt went to the paused leader is
    # resent under its session tag (applied once). Method: the client's session and
    # connection are on the leader, listed first; the leader is paused; a compare-and-swap
    # increment and a put must succeed, the counter must have moved by exactly one, and the
    # put must keep the revision its reply reported once the old leader runs again.
    cluster = fresh_cluster
    leader = cluster.wait_leader()
    endpoints = [cluster.addr(leader)] + [n.addr for n in cluster.nodes if n.id != leader]
    with impatient_per_attempt(endpoints) as c:
        c.cas("counter", None, "1")
        assert c.connected_to == endpoints[0]
        before = c.stats.resent_after_unknown_outcome
        cluster.pause(leader)
        try:
            c.cas("counter", b"1", "2")
            rev = c.put("after", "x")
            assert c.stats.resent_after_unknown_outcome > before, c.stats
            assert c.connected_to != endpoints[0]
        finally:
            cluster.resume(leader)
        cluster.wait_leader()
        assert c.get("counter") == b"2"
        r = c.read("after")
        assert r.value == b"x"
        assert r.revision == rev, "the put was applied again after its reply"


def test_a_server_that_knows_no_leader_first_in_the_endpoints_is_left(
    fresh_cluster: Cluster,
) -> None:
    # Goal: a reachable server that knows no leader, ahead of the cluster's servers in the
    # endpoints, must not hold the client until its timeout. Method: a server started with
    # --join and not added knows no leader, and answers every request for the leader "not
    # the leader, no leader known" (as a member cut off from its peers does; see the next
    # test). It goes first; writes, reads and members() (which asks servers for their
    # status, not for the leader) must succeed through the others.
    cluster = fresh_cluster
    cluster.wait_leader()
    voters = cluster.endpoints
    joiner = cluster.start_joiner(4)
    endpoints = [joiner.addr, *voters]
    with Client(endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=10.0) as c:
        assert c.connected_to == joiner.addr
        assert c.put("joiner-first", "1") > 0
        assert c.get("joiner-first") == b"1"
        assert c.connected_to != joiner.addr
    # A fresh client whose first request is a read moves on the same way.
    with Client(endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=10.0) as fresh:
        assert fresh.get("joiner-first") == b"1"
        assert fresh.connected_to != joiner.addr
    # So does members(), which finds the leader from a server's status: a status naming no
    # leader sends it to the next endpoint, not back to the same server until the timeout.
    with Client(endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=10.0) as m:
        assert m.connected_to == joiner.addr
        assert {x.id for x in m.members()} == {1, 2, 3}
        assert m.connected_to != joiner.addr
    # Still outside the cluster: the client moved on because it was told "no leader known".
    s = cluster.status(4)
    assert s is not None and s.leader is None, s


def test_a_follower_cut_off_from_its_peers_first_in_the_endpoints_is_left(
    fresh_cluster: Cluster,
) -> None:
    # Goal: the README tells operators to give clients every server's address; when the
    # first is cut off from its peers but not from the client, it answers "not the leader, no
    # leader known" for as long as the partition lasts, and the client must use the others
    # meanwhile. Method: iptables drops a follower's UDP (the peers' protocol) on loopback;
    # once it knows no leader and the other two still have one, a client with the cut-off
    # follower first writes, compare-and-swaps, reads and lists the members.
    why = iptables_unusable()
    if why is not None:
        pytest.skip(why)
    cluster = fresh_cluster
    leader = cluster.wait_leader()
    follower = next(n.id for n in cluster.nodes if n.id != leader)
    endpoints = [cluster.addr(follower)] + [n.addr for n in cluster.nodes if n.id != follower]
    with PortCut(cluster.node(follower).port):
        cluster.wait_status(follower, "no leader known while cut off", lambda s: s.leader is None)
        cluster.wait_status(leader, "still the leader", lambda s: s.role == "leader")
        with Client(endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=10.0) as c:
            assert c.connected_to == endpoints[0]
            assert c.put("cut-off-first", "1") > 0
            c.cas("cut-off-first", b"1", "2")
            assert c.get("cut-off-first") == b"2"
            assert c.connected_to != endpoints[0]
        with Client(endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=10.0) as fresh:
            assert fresh.get("cut-off-first") == b"2"
            assert fresh.connected_to != endpoints[0]
        with Client(endpoints, connect_timeout=0.5, request_timeout=1.0, timeout=10.0) as m:
            assert m.connected_to == endpoints[0]
            assert {x.id for x in m.members()} == {1, 2, 3}
            assert m.connected_to != endpoints[0]
        # Still cut off: the client moved on because it was told "no leader known", not
        # because the partition healed.
        s = cluster.status(follower)
        assert s is not None and s.leader is None, s
