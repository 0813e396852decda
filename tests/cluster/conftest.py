"""The whole system on a 3-master Valkey Cluster on loopback: the services started by their
real entry points with REDIS_CLUSTER_NODES, as `make up --cluster` runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from tests.helpers.clients import Stubs
from tests.helpers.system import System


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, valkey_cluster: EmbeddedValkeyCluster
) -> Iterator[System]:
    """One system per module on the session's cluster (flushed first)."""
    running = System.on_cluster(tmp_path_factory.mktemp("cluster-system"), valkey_cluster)
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
async def stubs(system: System) -> AsyncIterator[Stubs]:
    await system.wait_healthy()
    connected = Stubs.connect(system)
    yield connected
    await connected.close()


@pytest.fixture
def fresh_system(tmp_path: Path) -> Iterator[System]:
    """A private system on a private cluster, for tests that kill a master."""
    running = System.on_cluster(tmp_path)
    try:
        yield running
    finally:
        running.close()
