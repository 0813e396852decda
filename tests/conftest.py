"""Fixtures shared by every test: an embedded Valkey per session, and a private one on demand;
a real 3-master Valkey Cluster per session, and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from services.common.redis import create_cluster
from services.launcher.valkey import EmbeddedValkey
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from tests.helpers.valkey import flush_all, start_valkey


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    """One real valkey-server for the whole session (free port, AOF in a temp dir)."""
    server = start_valkey(tmp_path_factory.mktemp("valkey"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(valkey: EmbeddedValkey) -> str:
    """The session server's URL, emptied (FLUSHALL) so each test starts clean."""
    flush_all(valkey.url)
    return valkey.url


@pytest.fixture
def fresh_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A private server for tests that kill or restart it."""
    server = start_valkey(tmp_path / "valkey")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkeyCluster]:
    """One real 3-master Valkey Cluster on loopback for the whole session."""
    cluster = EmbeddedValkeyCluster(tmp_path_factory.mktemp("valkey-cluster"), masters=3)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(valkey_cluster: EmbeddedValkeyCluster) -> str:
    """The session cluster's ``redis+cluster://`` URL, emptied so each test starts clean."""
    valkey_cluster.wait_ok()
    valkey_cluster.flush()
    return valkey_cluster.url


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[RedisCluster]:
    """A client of the emptied session cluster (services.common.redis.create_cluster: it loads
    the slot map before its first command). Its DBSIZE counts the keys of every master (the
    client asks one node by default), as the standalone scenarios expect of it."""
    client = create_cluster(cluster_url, client_name="test")
    setattr(client, "dbsize", partial(client.dbsize, target_nodes=RedisCluster.PRIMARIES))  # noqa: B010
    yield client
    await client.aclose()
