"""The Rust side and the Python side of one cluster see each other's writes: the ``zatt``
command line (the Rust client library underneath) of this build against the Python
``Client`` and ``DistributedDict``, with values readable both ways by the value conventions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from zatt_harness import ZATT_CLI, Cluster, missing_build_message, run_cli

from zatt.client import Client, DistributedDict


def cli(cluster: Cluster, *args: str) -> dict[str, Any]:
    """Runs ``zatt --output json ARGS`` against the cluster; its JSON answer."""
    if not ZATT_CLI.exists():
        pytest.fail(missing_build_message(ZATT_CLI), pytrace=False)
    r = run_cli("--endpoints", ",".join(cluster.endpoints), "--output", "json", *args)
    assert r.returncode == 0, f"zatt {' '.join(args)}: exit {r.returncode}: {r.stderr!r}"
    answer = json.loads(r.stdout)
    assert isinstance(answer, dict)
    return answer


def test_python_reads_what_the_rust_cli_wrote(cluster: Cluster) -> None:
    cli(cluster, "put", "cross/greeting", "hello")
    cli(cluster, "put", "cross/count", "17")
    cli(cluster, "put", "cross/config", '{"debug":true,"level":[1,2]}')
    with Client(cluster.endpoints) as c:
        assert c.get("cross/greeting") == b"hello"
        assert c.get("cross/count") == b"17"
    d = DistributedDict("127.0.0.1", cluster.node(2).port)
    assert d["cross/greeting"] == "hello"
    assert d["cross/count"] == 17
    assert d["cross/config"] == {"debug": True, "level": [1, 2]}


def test_the_rust_cli_reads_what_python_wrote(cluster: Cluster) -> None:
    d = DistributedDict("127.0.0.1", cluster.node(3).port)
    d["cross/test"] = 4
    d["cross/list"] = [1, "two", None]
    d["cross/text"] = "plain words"
    d["cross/numeric text"] = "4"
    with Client(cluster.endpoints) as c:
        c.put("cross/raw", "caf\u00e9")
    assert cli(cluster, "get", "cross/test")["value"] == "4"
    assert cli(cluster, "get", "cross/list")["value"] == '[1,"two",null]'
    assert cli(cluster, "get", "cross/text")["value"] == "plain words"
    assert cli(cluster, "get", "cross/numeric text")["value"] == '"4"'
    assert cli(cluster, "get", "cross/raw")["value"] == "caf\u00e9"


def test_a_compare_and_swap_from_each_side_sees_the_other_s_value(cluster: Cluster) -> None:
    d = DistributedDict("127.0.0.1", cluster.node(1).port)
    d["cross/n"] = 4
    cli(cluster, "cas", "cross/n", "4", "5")
    assert d["cross/n"] == 5
    with Client(cluster.endpoints) as c:
        revision = c.cas("cross/n", "5", "6")
    got = cli(cluster, "get", "cross/n")
    assert got["value"] == "6"
    assert got["revision"] == revision
