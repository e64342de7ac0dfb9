"""``DistributedDict`` against real servers: the original Zatt's usage unchanged, the mapping
protocol, the value conventions, each refresh policy, and the cluster operations."""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from typing import Any

import pytest
from zatt_harness import Cluster

import zatt.client
from zatt.client import (
    Client,
    ConfigError,
    DistributedDict,
    NotFound,
    Timeout,
    Unavailable,
    ZattError,
)
from zatt.client.refresh_policies import (
    RefreshPolicyAlways,
    RefreshPolicyCount,
    RefreshPolicyLock,
    RefreshPolicyTime,
)


@pytest.fixture
def empty(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster with no key in it: a dict shows the whole dictionary."""
    with Client(cluster.endpoints) as c:
        for kv in list(c.scan()):
            c.delete(kv.key)
    yield cluster


def leader_and_follower(cluster: Cluster) -> tuple[int, int]:
    leader = cluster.wait_leader()
    return leader, next(n.id for n in cluster.nodes if n.id != leader)


def test_the_original_prompt_session(empty: Cluster) -> None:
    from zatt.client.distributedDict import DistributedDict as Original

    assert Original is zatt.client.DistributedDict
    d = zatt.client.DistributedDict("127.0.0.1", empty.node(1).port)
    d["hello"] = "world"
    assert repr(d) == "{'hello': 'world'}"
    assert d == {"hello": "world"}
    # As the original's own documentation showed it: two instances, one cluster.
    d1 = Original("127.0.0.1", empty.node(2).port)
    d2 = Original("127.0.0.1", empty.node(3).port)
    d1["spam"] = "egg"
    assert d2["spam"] == "egg"
    d1["test"] = 4
    assert d2 == {"hello": "world", "spam": "egg", "test": 4}
    assert d2 != {"hello": "world", "spam": "egg", "test": "4"}


def test_values_round_trip_through_the_conventions(empty: Cluster) -> None:
    d = DistributedDict("127.0.0.1", empty.node(1).port)
    values: dict[str, Any] = {
        "int": 4,
        "float": 2.5,
        "bool": True,
        "none": None,
        "list": [1, "two", [3.0, None]],
        "dict": {"a": {"b": False}},
        "str": "plain text",
        "numeric str": "4",
        "bytes": b"\xff\x00",
    }
    for k, v in values.items():
        d[k] = v
    other = DistributedDict("127.0.0.1", empty.node(2).port)
    for k, v in values.items():
        assert d[k] == v and type(d[k]) is type(v), k
        assert other[k] == v and type(other[k]) is type(v), k
    # What the Rust client and the command line see: the stored bytes.
    with Client(empty.endpoints) as raw:
        assert raw.get("int") == b"4"
        assert raw.get("list") == b'[1,"two",[3.0,null]]'
        assert raw.get("str") == b"plain text"
        assert raw.get("numeric str") == b'"4"'
        assert raw.get("bytes") == b"\xff\x00"
        # And what they write reads by the same conventions.
        raw.put("from-rust", "hello")
        raw.put("count", "17")
    assert d["from-rust"] == "hello"
    assert d["count"] == 17


def test_the_mapping_protocol(empty: Cluster) -> None:
    d = DistributedDict("127.0.0.1", empty.node(1).port)
    assert isinstance(d, MutableMapping)
    assert len(d) == 0 and d == {} and not d
    d["a"] = 1
    d[b"b"] = "two"
    d.update({"c": [3]}, e=5)
    assert "a" in d and b"a" in d and "zz" not in d
    assert 1 not in d  # type: ignore[comparison-overlap]  # not a key type: False, as dict does
    assert len(d) == 4
    assert sorted(d) == ["a", "b", "c", "e"]
    assert sorted(d.keys()) == ["a", "b", "c", "e"]
    assert sorted(d.items()) == [("a", 1), ("b", "two"), ("c", [3]), ("e", 5)]
    assert sorted(map(str, d.values())) == ["1", "5", "[3]", "two"]
    assert d.get("missing") is None and d.get("missing", 7) == 7
    assert d.setdefault("a", 99) == 1
    assert d.setdefault("f", 6) == 6
    assert d.pop("f") == 6 and "f" not in d
    with pytest.raises(KeyError):
        d["missing"]
    with pytest.raises(NotFound) as e:
        del d["missing"]
    assert isinstance(e.value, KeyError) and isinstance(e.value, ZattError)
    assert e.value.key == "missing"
    del d["e"]
    with Client(empty.endpoints) as raw:
        assert raw.get("e") is None
    assert d.copy() == {"a": 1, "b": "two", "c": [3]}
    assert dict(d) == d.copy()
    with pytest.raises(TypeError):
        d[4] = "int keys are not keys"  # type: ignore[index]
    with pytest.raises(TypeError):
        d["k"] = {1, 2}
    d.clear()
    assert d == {}
    with pytest.raises(TypeError):
        hash(d)


def test_non_utf8_keys_stay_bytes(empty: Cluster) -> None:
    d = DistributedDict("127.0.0.1", empty.node(1).port)
    d[b"\xff"] = "v"
    assert d[b"\xff"] == "v"
    assert list(d) == [b"\xff"]


def test_always_sees_every_acknowledged_write_even_from_a_follower(empty: Cluster) -> None:
    # The default refresh is linearizable: a dict on a follower misses nothing another
    # client was told is done (with a stale refresh, a lagging follower could).
    _, follower = leader_and_follower(empty)
    d = DistributedDict("127.0.0.1", empty.node(follower).port)
    assert isinstance(d.refresh_policy, RefreshPolicyAlways)
    with Client(empty.endpoints) as writer:
        for i in range(100):
            writer.put("seq", str(i))
            assert d["seq"] == i


def test_stale_refresh_still_reads_its_own_writes_and_never_goes_back(empty: Cluster) -> None:
    _, follower = leader_and_follower(empty)
    d = DistributedDict("127.0.0.1", empty.node(follower).port, stale_refresh=True)
    seen = -1
    with Client(empty.endpoints) as writer:
        for i in range(100):
            d["mine"] = i
            assert d["mine"] == i  # its own write, whatever the follower has applied
            writer.put("theirs", str(i))
            got = d.get("theirs", -1)
            assert got >= seen  # may lag behind the writer, never behind itself
            seen = got


def test_count_policy_serves_at_most_n_reads_per_refresh(empty: Cluster) -> None:
    d = DistributedDict("127.0.0.1", empty.node(1).port, refresh_policy=RefreshPolicyCount(3))
    loads = d.refresh_count
    with Client(empty.endpoints) as writer:
        writer.put("k", "1")
        # The copy was loaded at construction; it serves three reads, then refreshes.
        assert [d.get("k") for _ in range(3)] == [None, None, None]
        assert d.refresh_count == loads
        assert d["k"] == 1
        assert d.refresh_count == loads + 1
        writer.put("k", "2")
        assert [d["k"] for _ in range(2)] == [1, 1]
        assert d["k"] == 2


def test_lock_policy_freezes_the_copy_while_the_lock_is_down(empty: Cluster) -> None:
    policy = RefreshPolicyLock(status=False)
    d = DistributedDict("127.0.0.1", empty.node(1).port, refresh_policy=policy)
    with Client(empty.endpoints) as writer:
        writer.put("k", "1")
        assert len(d) == 0 and "k" not in d
        policy.lock = True
        assert len(d) == 1 and d["k"] == 1
        writer.put("k2", "x")
        assert len(d) == 2
        policy.lock = False
        writer.put("k3", "y")
        assert len(d) == 2


def test_time_policy_refreshes_once_the_copy_is_old(empty: Cluster) -> None:
    d = DistributedDict(
        "127.0.0.1", empty.node(1).port, refresh_policy=RefreshPolicyTime(timedelta(minutes=1))
    )
    now = [1000.0]
    d._clock = lambda: now[0]
    d.refresh(force=True)
    with Client(empty.endpoints) as writer:
        writer.put("k", "1")
        assert "k" not in d
        now[0] += 59
        assert "k" not in d
        now[0] += 2
        assert d["k"] == 1
        writer.put("k", "2")
        assert d["k"] == 1
        d.refresh(force=True)
        assert d["k"] == 2
    assert RefreshPolicyTime(5).delta == timedelta(seconds=5)


def test_a_write_is_attempted_again_only_when_it_certainly_did_not_apply(
    empty: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = DistributedDict("127.0.0.1", empty.node(1).port, append_retry_attempts=3)
    real_put = d.client.put
    calls = [0]

    def flaky_put(key: bytes | str, value: bytes | str) -> int:
        calls[0] += 1
        if calls[0] < 3:
            raise Unavailable("no leader", may_have_applied=False)
        return real_put(key, value)

    monkeypatch.setattr(d.client, "put", flaky_put)
    d["k"] = "v"
    assert calls[0] == 3 and d["k"] == "v"

    def ambiguous_put(key: bytes | str, value: bytes | str) -> int:
        calls[0] += 1
        raise Timeout("lost", may_have_applied=True)

    calls[0] = 0
    monkeypatch.setattr(d.client, "put", ambiguous_put)
    with pytest.raises(Timeout):
        d["k"] = "w"
    assert calls[0] == 1


def test_diagnostic_describes_the_connected_server(empty: Cluster) -> None:
    leader, follower = leader_and_follower(empty)
    d = DistributedDict("127.0.0.1", empty.node(follower).port, stale_refresh=True)
    info = d.diagnostic()
    assert info["id"] == follower
    assert info["role"] == "follower"
    assert info["leader"] == leader
    assert {m["id"] for m in info["members"]} == {1, 2, 3}


def test_config_cluster_adds_and_deletes_a_server(fresh_cluster: Cluster) -> None:
    d = DistributedDict("127.0.0.1", fresh_cluster.node(1).port)
    joiner = fresh_cluster.start_joiner(4)
    d.config_cluster("add", "127.0.0.1", joiner.port)
    members = {m.id: m for m in d.client.members()}
    assert members[4].voter and members[4].addr == joiner.addr
    d["after-add"] = 1
    deadline = time.monotonic() + 20
    while fresh_cluster.status(4) is None or fresh_cluster.status(4).applied_index == 0:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the new server never applied anything"
        time.sleep(0.05)
    d.config_cluster("delete", "127.0.0.1", joiner.port)
    assert 4 not in {m.id for m in d.client.members()}
    with pytest.raises(ConfigError):
        d.config_cluster("delete", "127.0.0.1", joiner.port)
    with pytest.raises(ConfigError):
        d.config_cluster("rename", "127.0.0.1", joiner.port)
