"""Watches from Python against real servers: ``Client.watch`` delivers every acknowledged change
under its prefix once, in revision order, through a ``kill -9`` of its server; a watch from a
revision; ``Compacted``; and ``DistributedDict`` with ``RefreshPolicyWatch`` (another dict's
writes seen with ``on_change``, reads that never go back in time across a leader kill, a
dict's own writes visible at once); and, against stand-in servers, a watch passing over a server
whose answer is not the protocol. Every wait is bounded; nothing asserts on timing."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from zatt_harness import Cluster, FakeServer, SendThenClose, frame, u64

from zatt.client import (
    CasFailed,
    Change,
    Client,
    Compacted,
    DistributedDict,
    ProtocolError,
    RefreshPolicyWatch,
    WatchEvent,
)

T = 30.0


def collect_until(w: object, until: int, got: list[WatchEvent]) -> None:
    """Takes a watch's events until one at or past ``until`` arrived, within ``T``."""
    from zatt.client import Watch

    assert isinstance(w, Watch)
    deadline = time.monotonic() + T
    while (not got or got[-1].revision < until) and w.revision < until:
        assert time.monotonic() < deadline, f"watch stalled at {w.revision}"
        e = w.next(0.2)
        if e is not None:
            got.append(e)


def test_a_watch_sees_every_acknowledged_change_once_in_order_through_a_kill(
    fresh_cluster: Cluster,
) -> None:
    # Goal: the guarantee, from Python. Method: a watch on "w/" on the leader; 300 puts,
    # deletes and compare-and-swaps (some outside the prefix, some changing nothing); the
    # leader is killed half-way. The events are exactly the acknowledged changes under the
    # prefix, and replaying them gives the prefix's final contents.
    c = fresh_cluster
    leader = c.wait_leader()
    client = Client(c.endpoints, timeout=T, request_timeout=1.0)
    w = client.watch(b"w/", endpoint=c.addr(leader))
    assert w.connected_to == c.addr(leader)
    got: list[WatchEvent] = []
    stop = threading.Event()

    def read() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            e = w.next(0.1)
            if e is not None:
                got.append(e)

    reader = threading.Thread(target=read)
    reader.start()
    rng = random.Random(5)
    acked: list[WatchEvent] = []
    try:
        for i in range(300):
            if i == 150:
                c.kill(leader)
            inside = rng.random() < 0.8
            key = f"{'w/' if inside else 'x/'}{rng.randrange(20)}".encode()
            value = f"v{i}".encode()
            op = rng.randrange(4)
            if op < 2:
                acked.append(WatchEvent(key, value, client.put(key, value)))
            elif op == 2:
                existed, rev = client.delete_with_revision(key)
                if existed:
                    acked.append(WatchEvent(key, None, rev))
            else:
                current = client.get(key)
                expect = current if rng.random() < 0.5 else b"never"
                try:
                    rev = client.cas(key, expect, value)
                    acked.append(WatchEvent(key, value, rev))
                except CasFailed:
                    pass
        want = [e for e in acked if e.key.startswith(b"w/")]
        deadline = time.monotonic() + T
        while not got or got[-1].revision < want[-1].revision:
            assert time.monotonic() < deadline, "the watch did not catch up"
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
    assert all(a.revision < b.revision for a, b in zip(got, got[1:]))
    assert got == want
    assert w.stats.resumes >= 1
    assert w.connected_to != c.addr(leader)
    replay: dict[bytes, bytes] = {}
    for e in got:
        if e.value is None:
            replay.pop(e.key, None)
        else:
            replay[e.key] = e.value
    assert replay == {k: v for k, v in client.dump().items() if k.startswith(b"w/")}
    w.close()
    client.close()


def test_a_watch_from_a_revision_and_one_too_old(zattd: Path, tmp_path: Path) -> None:
    # Goal: a watch from revision R gets exactly the changes from R on; a start older than the
    # servers' history raises Compacted naming the oldest revision, from which a watch works.
    c = Cluster(tmp_path / "c", 1, extra=["--watch-history-changes", "10"])
    try:
        c.wait_leader()
        with Client(c.endpoints, timeout=T) as client:
            revs = [client.put(f"k{i}", f"v{i}") for i in range(30)]
            got: list[WatchEvent] = []
            with client.watch(b"", revs[25]) as w:
                collect_until(w, revs[29], got)
            assert got == [
                WatchEvent(f"k{i}".encode(), f"v{i}".encode(), revs[i]) for i in range(25, 30)
            ]
            with pytest.raises(Compacted) as info:
                client.watch(b"", 1)
            oldest = info.value.oldest
            assert revs[0] < oldest <= revs[20]
            got = []
            with client.watch(b"", oldest) as w:
                collect_until(w, revs[29], got)
            assert got[-1].revision == revs[29]
            assert got[0].revision == min(r for r in revs if r >= oldest)
    finally:
        c.stop()


def wait_value(d: DistributedDict, key: str, want: object) -> None:
    deadline = time.monotonic() + T
    while d.get(key) != want:
        assert time.monotonic() < deadline, f"{key} is {d.get(key)!r}, want {want!r}"
        time.sleep(0.01)


def test_a_watching_dict_follows_another_and_tells_its_hooks(cluster: Cluster) -> None:
    # Goal: a dict under RefreshPolicyWatch follows another client's writes from the change
    # stream alone (no reload), its hook sees each change once in order, and a dict sees its
    # own writes at once.
    writer = DistributedDict(endpoints=cluster.endpoints, refresh_policy=RefreshPolicyWatch())
    writer.client.delete(b"wd/a")
    writer["wd/before"] = 0
    reader = DistributedDict(endpoints=cluster.endpoints, refresh_policy=RefreshPolicyWatch())
    seen: list[Change] = []
    reader.on_change(lambda ch: seen.append(ch) if str(ch.key).startswith("wd/") else None)
    assert reader["wd/before"] == 0
    loads = reader.refresh_count
    writer["wd/a"] = {"n": 1}
    wait_value(reader, "wd/a", {"n": 1})
    writer["wd/a"] = "two"
    del writer["wd/before"]
    wait_value(reader, "wd/before", None)
    assert reader["wd/a"] == "two"
    assert reader.refresh_count == loads, "the reader reloaded instead of following"
    assert [(ch.kind, ch.key, ch.value) for ch in seen] == [
        ("put", "wd/a", {"n": 1}),
        ("put", "wd/a", "two"),
        ("delete", "wd/before", None),
    ]
    assert all(a.revision < b.revision for a, b in zip(seen, seen[1:]))
    for i in range(20):
        writer["wd/own"] = i
        assert writer["wd/own"] == i
    reader.close()
    writer.close()


def test_watching_reads_never_go_back_in_time_across_a_leader_kill(
    fresh_cluster: Cluster,
) -> None:
    # Goal: monotonic reads through a leader change, and the dict catching up with the last
    # write. Method: a writer thread counts up a key; a watching dict whose stream is on the
    # leader reads it in a loop; the leader is killed half-way.
    c = fresh_cluster
    leader = c.wait_leader()
    d = DistributedDict(endpoints=c.endpoints, refresh_policy=RefreshPolicyWatch(), timeout=T)
    d.watch_endpoint = c.addr(leader)
    d.refresh(force=True)
    assert d.watch_connected_to == c.addr(leader)
    last = [0]

    def write() -> None:
        with Client(c.endpoints, timeout=T, request_timeout=1.0) as w:
            for i in range(1, 201):
                w.put("n", str(i))
                last[0] = i

    t = threading.Thread(target=write)
    t.start()
    seen = 0
    killed = False
    deadline = time.monotonic() + 90
    try:
        while True:
            v = d.get("n") or 0
            assert v >= seen, f"read went back from {seen} to {v}"
            seen = v
            if not killed and v >= 80:
                c.kill(leader)
                killed = True
            if not t.is_alive() and v == last[0]:
                break
            assert time.monotonic() < deadline, f"the dict did not catch up ({v})"
            time.sleep(0.002)
    finally:
        t.join()
    assert killed
    assert seen == 200
    assert d.watch_connected_to != c.addr(leader)
    d.close()


def _snapshotting_cluster(tmp_path: Path) -> tuple[Cluster, int, int]:
    """A 3-server cluster taking snapshots every 50 entries; its leader and a follower."""
    c = Cluster(tmp_path / "c", 3, extra=["--snapshot-entries", "50"])
    leader = c.wait_leader()
    follower = next(i for i in (1, 2, 3) if i != leader)
    return c, leader, follower


def _fall_behind_by_snapshot(
    c: Cluster, leader: int, follower: int, writes: Callable[[Client], None]
) -> int:
    """Pauses ``follower`` while ``writes`` go in through the leader alone, then resumes it
    and waits until it has caught up (by snapshot: the leader's log has moved past it); the
    last revision written."""
    c.pause(follower)
    try:
        with Client([c.addr(leader)], timeout=T) as writer:
            writes(writer)
            last = writer.put("last", "v")
    finally:
        c.resume(follower)
    c.wait_status(follower, "catching up", lambda s: s.applied_index >= last)
    return last


def test_a_watch_its_server_can_no_longer_serve_raises_compacted_mid_stream(
    zattd: Path, tmp_path: Path
) -> None:
    # Goal: Compacted in the middle of a stream: the changes received come first, then
    # Compacted naming a revision past them (never a silent gap), then the watch is over.
    # Method: a watch that knows only a follower, which is paused while 400 writes go in and
    # then catches up by snapshot, so that it can no longer send what the snapshot covers.
    c, leader, follower = _snapshotting_cluster(tmp_path)
    try:
        with Client([c.addr(leader)], timeout=T) as writer:
            first = writer.put("c/first", "v")
        # The follower alone, and patient: resuming elsewhere would carry it past the gap.
        only_follower = Client([c.addr(follower)], timeout=T)
        w = only_follower.watch(b"c/", first, silence_timeout=120.0)
        got: list[WatchEvent] = []
        collect_until(w, first, got)
        assert [e.revision for e in got] == [first]
        acked = [first]

        def writes(writer: Client) -> None:
            acked.extend(writer.put(f"c/{i}", "v") for i in range(400))

        last = _fall_behind_by_snapshot(c, leader, follower, writes)
        deadline = time.monotonic() + T
        with pytest.raises(Compacted) as info:
            while True:
                assert time.monotonic() < deadline, "neither Compacted nor the end came"
                e = w.next(0.2)
                if e is not None:
                    got.append(e)
        revs = [e.revision for e in got]
        assert revs == acked[: len(revs)]
        assert revs[-1] + 1 < info.value.oldest <= last + 1
        assert list(w) == [], "the watch went on after Compacted"
        # It asked its one server again before giving up, and went no further.
        assert w.stats.resumes == 1
        only_follower.close()
    finally:
        c.stop()


def test_a_watch_whose_server_was_compacted_goes_on_from_another_member(
    zattd: Path, tmp_path: Path
) -> None:
    # Goal: Compacted from one member is that member's view: a watch that knows the leader
    # too resumes there, where the history still holds every change, and the caller sees each
    # change once, in order, and no error. Method: as above, with both endpoints known.
    c, leader, follower = _snapshotting_cluster(tmp_path)
    try:
        with Client([c.addr(leader)], timeout=T) as writer:
            first = writer.put("d/first", "v")
        both = Client([c.addr(follower), c.addr(leader)], timeout=T)
        w = both.watch(b"d/", first, silence_timeout=120.0, endpoint=c.addr(follower))
        assert w.connected_to == c.addr(follower)
        got: list[WatchEvent] = []
        collect_until(w, first, got)
        acked = [first]

        def writes(writer: Client) -> None:
            acked.extend(writer.put(f"d/{i}", "v") for i in range(400))

        last = _fall_behind_by_snapshot(c, leader, follower, writes)
        collect_until(w, last, got)
        assert [e.revision for e in got] == acked, "every change once, in order"
        assert w.stats.resumes >= 1, "the watch never left the follower"
        assert w.connected_to == c.addr(leader)
        both.close()
    finally:
        c.stop()


def test_a_watching_dict_whose_changes_are_no_longer_kept_loads_again(
    zattd: Path, tmp_path: Path
) -> None:
    # Goal: when its stream ends with Compacted, a dict loads again (rather than failing or
    # missing changes), and its hooks learn the differences: once per key, nothing for a key
    # that did not change. Method: the dict's stream is on a follower, paused while the dict's
    # keys change and 400 more are written, which then catches up by snapshot.
    c, leader, follower = _snapshotting_cluster(tmp_path)
    try:
        with Client([c.addr(leader)], timeout=T) as writer:
            for k in ("keep", "gone", "same"):
                writer.put(k, "1")
        # The follower is the only member the dict knows (its loads follow the follower's hint
        # to the leader): a watch that knows another member would go on there without a gap.
        d = DistributedDict(
            endpoints=[c.addr(follower)], refresh_policy=RefreshPolicyWatch(), timeout=T
        )
        d.watch_endpoint = c.addr(follower)
        d.refresh(force=True)
        seen: list[Change] = []
        d.on_change(seen.append)
        assert d["gone"] == 1
        assert d.watch_connected_to == c.addr(follower)
        loads = d.refresh_count

        def writes(writer: Client) -> None:
            writer.put("keep", "2")
            writer.delete("gone")
            for i in range(400):
                writer.put(f"n/{i}", "v")

        last = _fall_behind_by_snapshot(c, leader, follower, writes)
        # The next read takes up the stream: its end (Compacted), then a load.
        assert d["keep"] == 2
        assert d.refresh_count == loads + 1, "the stream was not compacted"
        assert "gone" not in d
        assert d["same"] == 1
        assert len(d) == 403
        at_reload = [ch for ch in seen if ch.revision >= last]
        assert at_reload, "no hook call at the reload"
        assert len({ch.revision for ch in at_reload}) == 1
        assert len({ch.key for ch in at_reload}) == len(at_reload), "a key told twice"
        assert all(ch.key != "same" for ch in seen), "an unchanged key told"
        replay: dict[object, object] = {"keep": 1, "gone": 1, "same": 1}
        for ch in seen:
            if ch.kind == "delete":
                replay.pop(ch.key, None)
            else:
                replay[ch.key] = ch.value
        assert replay == dict(d.items())
        d.close()
    finally:
        c.stop()


WATCH = 14
GARBAGE = b"\xde\xad\xbe\xef" * 16  # no response frame: another service on the port

# What a server may answer a watch with that is not the protocol's answer.
NOT_THE_PROTOCOL: dict[str, Callable[[int], bytes]] = {
    "garbage": lambda rid: GARBAGE,
    "a frame this client cannot read": lambda rid: frame(rid, 0x7F),
    "a frame cut by a closed connection": lambda rid: SendThenClose(frame(rid, 0x8E, u64(4))[:10]),
}


@pytest.mark.parametrize("name", sorted(NOT_THE_PROTOCOL))
def test_a_watch_passes_over_a_server_whose_answer_is_not_the_protocol(name: str) -> None:
    # Goal: bytes that are not the protocol in answer to the watch request (or a reply cut
    # off by the connection closing) send the watch on to the next server, as the Rust
    # client's does, rather than end it. Method: the watch is asked to start on such a
    # server; the client's only endpoint answers the watch; the watch must be in place there,
    # the first server asked once.
    bad_seen: list[int] = []
    answer = NOT_THE_PROTOCOL[name]

    def bad(rid: int, op: int, req: bytes) -> bytes | None:
        bad_seen.append(op)
        return answer(rid)

    def good(rid: int, op: int, req: bytes) -> bytes | None:
        return frame(rid, 0x8E, u64(4)) if op == WATCH else b""

    with FakeServer(bad) as first, FakeServer(good) as second:
        c = Client(second.addr, timeout=10.0, request_timeout=5.0, connect_timeout=5.0)
        with c.watch(b"w/", 5, endpoint=first.addr) as w:
            assert w.connected_to == second.addr
            assert w.stats.opens == 1
            assert w.revision == 4
        assert bad_seen == [WATCH]


def test_a_watch_whose_every_endpoint_answers_garbage_ends_before_its_timeout() -> None:
    # Goal: as for requests, once every endpoint has answered with bytes that are not the
    # protocol, waiting cannot help: the watch ends with ProtocolError naming each, every
    # endpoint asked once (a watch that waited out its timeout would ask again and again).
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def garble(name: str) -> Callable[[int, int, bytes], bytes]:
        def serve(rid: int, op: int, req: bytes) -> bytes:
            seen[name].append(op)
            return GARBAGE

        return serve

    with FakeServer(garble("a")) as a, FakeServer(garble("b")) as b:
        c = Client([a.addr, b.addr], timeout=10.0, request_timeout=5.0, connect_timeout=5.0)
        with pytest.raises(ProtocolError) as caught:
            c.watch(b"w/", 5)
        said = str(caught.value)
        assert a.addr in said and b.addr in said, said
        assert "not the Zatt protocol" in said, said
        assert seen == {"a": [WATCH], "b": [WATCH]}
