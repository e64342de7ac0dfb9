"""TLS against real servers, with a CA and certificates generated at test time: the client
verifies the server against the CA it is given, presents a client certificate when asked,
and reports a certificate problem with an endpoint at once as a ``ProtocolError`` (one with a
server a leader hint names sends the client back to its endpoints)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from zatt_harness import Cluster, FakeServer, Tls, frame, u64

from zatt.client import Client, DistributedDict, ProtocolError, ZattError


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_cluster(
    zattd: Path, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tls-cluster"), 3, tls=tls)
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def mtls_cluster(
    zattd: Path, tls: Tls, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("mtls-cluster"), 1, tls=tls, client_ca=True)
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()


QUICK = {"timeout": 1.0, "request_timeout": 0.3, "connect_timeout": 0.3}


def test_a_client_that_trusts_the_ca_works_through_any_member(
    tls_cluster: Cluster, tls: Tls
) -> None:
    leader = tls_cluster.wait_leader()
    follower = next(n for n in tls_cluster.nodes if n.id != leader)
    with Client(follower.addr, tls_ca=tls.ca) as c:
        c.put("tls/k", "v")  # redirected to the leader, over TLS again
        assert c.get("tls/k") == b"v"
        assert [kv.key for kv in c.scan("tls/")] == [b"tls/k"]
        assert c.status().id == leader
        assert c.stats.hints_followed >= 1
    d = DistributedDict("127.0.0.1", follower.port, tls_ca=tls.ca)
    d["tls/dict"] = [1, 2]
    assert d["tls/dict"] == [1, 2]


def test_a_server_certificate_from_another_ca_is_refused_at_once(
    tls_cluster: Cluster, tls: Tls
) -> None:
    with pytest.raises(ProtocolError) as e:
        Client(tls_cluster.endpoints, tls_ca=tls.other_ca, timeout=30.0)
    assert "TLS" in str(e.value) and "certificate" in str(e.value)
    assert not e.value.may_have_applied


def test_the_name_verified_is_the_one_dialled(tls_cluster: Cluster, tls: Tls) -> None:
    # The certificate names 127.0.0.1 only.
    with pytest.raises(ProtocolError):
        Client(tls_cluster.endpoints, tls_ca=tls.ca, tls_server_name="db.example", timeout=30.0)
    port = tls_cluster.node(1).port
    with pytest.raises(ZattError):
        Client(f"localhost:{port}", tls_ca=tls.ca, **QUICK)  # type: ignore[arg-type]


def test_a_plain_client_gets_a_clean_error_from_a_tls_server(tls_cluster: Cluster) -> None:
    c = Client(tls_cluster.endpoints, **QUICK)  # type: ignore[arg-type]
    with pytest.raises(ZattError) as e:
        c.get("tls/k")
    assert not e.value.may_have_applied


def test_client_certificates_when_the_server_requires_them(mtls_cluster: Cluster, tls: Tls) -> None:
    with Client(
        mtls_cluster.endpoints, tls_ca=tls.ca, tls_cert=tls.client_cert, tls_key=tls.client_key
    ) as c:
        c.put("mtls", "ok")
        assert c.get("mtls") == b"ok"
    with pytest.raises(ZattError):
        # Refused during the handshake (TLS 1.2) or at the first request (TLS 1.3, where the
        # server reads the missing certificate after the client considers itself connected).
        Client(mtls_cluster.endpoints, tls_ca=tls.ca, **QUICK).get("mtls")  # type: ignore[arg-type]


def test_a_leader_hint_whose_tls_fails_falls_back_to_the_endpoints(
    tls: Tls, tmp_path: Path
) -> None:
    # Goal: a NotLeader hint naming a server whose certificate the client does not trust
    # does not end the call (as it does for an endpoint, the caller's own configuration): a
    # hint is a server's word, possibly stale, and the endpoints are tried instead, as the
    # Rust client does. Method: a TLS stand-in hints, on the first read, at one whose
    # certificate comes from a CA the client does not trust, then (the leader since) serves;
    # the read must succeed there, the hinted server dialled once.
    stranger = Tls(tmp_path / "stranger")
    with FakeServer(lambda rid, op, req: b"", tls=stranger.server_context()) as untrusted:
        addr = untrusted.addr.encode()
        hint = b"\x01" + b"\x01" + u64(2) + b"\x01" + len(addr).to_bytes(4, "little") + addr
        asked: list[int] = []

        def serve(rid: int, op: int, req: bytes) -> bytes:
            asked.append(op)
            if len(asked) == 1:
                return frame(rid, 0x8C, hint)
            return frame(rid, 0x82, u64(3) + u64(4) + b"\x00")

        with FakeServer(serve, tls=tls.server_context()) as server:
            c = Client(
                server.addr,
                tls_ca=tls.ca,
                timeout=10.0,
                request_timeout=5.0,
                connect_timeout=5.0,
            )
            assert c.read("k") == (None, 3, 4)
            assert asked == [2, 2]
            assert c.stats.hints_followed == 1
            assert untrusted.connections == 1
            assert c.connected_to == server.addr
