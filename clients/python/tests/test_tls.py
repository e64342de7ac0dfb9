"""TLS against real servers, with a CA and certificates generated at test time: the client
verifies the server against the CA it is given, presents a client certificate when asked,
and reports a certificate problem at once as a ``ProtocolError``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from zatt_harness import Cluster, Tls

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
