"""Fixtures shared by the Python tests: clusters of real servers from this build, started
and stopped by the tests themselves (see ``zatt_harness``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from zatt_harness import ZATTD, Cluster, missing_build_message


@pytest.fixture(scope="session")
def zattd() -> Path:
    """The server binary; fails the tests that need it, with what to do, when it is not built."""
    if not ZATTD.exists():
        pytest.fail(missing_build_message(ZATTD), pytrace=False)
    return ZATTD


@pytest.fixture(scope="module")
def cluster(zattd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-server cluster shared by one test module (tests use keys of their own)."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()


@pytest.fixture
def fresh_cluster(zattd: Path, tmp_path: Path) -> Iterator[Cluster]:
    """A 3-server cluster of the test's own, empty, for tests that kill servers or need the
    whole dictionary to themselves."""
    c = Cluster(tmp_path / "cluster", 3)
    try:
        c.wait_leader()
        yield c
    finally:
        c.stop()
