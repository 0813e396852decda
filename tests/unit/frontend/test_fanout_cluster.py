"""The fan-out on a real 3-master Valkey Cluster: sharded pub/sub between two replicas, and what
a killed master, a dropped subscription connection and a silent master do to the streams."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from services.common.domain import Principal, Unavailable
from services.common.redis import create_cluster
from services.frontend.fanout import (
    CLUSTER_CHANNEL_PREFIX,
    HEARTBEAT_TIMEOUT_SECONDS,
    SHARDS,
    ShardedBus,
    channel_of,
    cluster_channel_of,
)
from services.frontend.hub import Hub, Subscription
from services.frontend.service import FrontendService
from services.launcher.valkey import EmbeddedValkey
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from tests.unit.frontend.test_service import BOB, ListSource, note

# redis-py's cluster client, when it reloads its slot map after a node failed or timed out,
# drops the connections that reload opened without closing them (allocated in
# RedisCluster.initialize -> NodesManager.initialize, "CLUSTER SLOTS"): they are collected open.
# Each test collects them in its own teardown, where this filter applies.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def _collect_dropped_connections() -> Iterator[None]:
    """Torn down last, after the test's event loop is closed: what it held is collected here
    (several passes, as pytest's own collection at the end of the session does)."""
    yield
    for _ in range(5):
        gc.collect()


class Replica:
    def __init__(self, url: str) -> None:
        self.redis: RedisCluster = create_cluster(url)
        self.bus = ShardedBus(self.redis)
        self.service = FrontendService(ListSource([]), Hub(), bus=self.bus)
        self.task = asyncio.create_task(self.bus.run())

    def open(self, email: str = BOB) -> Subscription:
        principal = Principal(kind="user", name=email, account_id="")
        return self.service.open(principal, email)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)
        await asyncio.wait_for(self.redis.aclose(), 10)


@pytest.fixture
async def pair(cluster_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(cluster_url), Replica(cluster_url)
    try:
        assert await a.bus.wait_up(10) and await b.bus.wait_up(10)
        yield a, b
    finally:
        await a.close()
        await b.close()
        gc.collect()


async def _next(subscription: Subscription, within: float = 3.0) -> str:
    return (await asyncio.wait_for(subscription.next(), within)).id


def _master_of(cluster: EmbeddedValkeyCluster, channel: str) -> EmbeddedValkey:
    """The master that owns ``channel``'s slot (equal contiguous ranges, masters in order)."""
    slot, masters = key_slot(channel.encode()), cluster.masters
    return masters[slot * len(masters) // 16384]


@contextlib.contextmanager
def _down(cluster: EmbeddedValkeyCluster, master: EmbeddedValkey) -> Iterator[None]:
    """``master`` killed (SIGKILL) for the block, then restarted into the cluster."""
    master.kill()
    try:
        yield
    finally:
        master.start()
        cluster.wait_ok(30)


def test_the_channels_spread_evenly_over_three_masters() -> None:
    channels = {cluster_channel_of(f"user{n}@example.com") for n in range(500)}
    assert len(channels) == SHARDS
    assert all(c.startswith(CLUSTER_CHANNEL_PREFIX + "{") and c.endswith("}") for c in channels)
    # Shard n of the cluster is shard n of a standalone Valkey: the same receivers share one.
    for n in range(50):
        email = f"user{n}@example.com"
        shard = channel_of(email).rsplit("{", 1)[1].rstrip("}")
        assert cluster_channel_of(email).startswith(f"{CLUSTER_CHANNEL_PREFIX}{{{shard}.")
    thirds = Counter(key_slot(c.encode()) * 3 // 16384 for c in channels)
    assert sorted(thirds.values()) == [5, 5, 6]


async def test_a_push_to_one_replica_shows_on_both_once(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    on_a, on_b = a.open(), b.open()
    assert await a.service.deliver(note(1)) == 1
    assert await _next(on_a) == "1" and await _next(on_b) == "1"
    assert await b.service.deliver(note(1)) == 0  # the relay's redelivery: shown nowhere again
    results = await a.service.deliver_many([(note(2), ""), (note(3), "")])
    assert results == [1, 1]
    assert [await _next(on_b), await _next(on_b)] == ["2", "3"]
    assert [await _next(on_a), await _next(on_a)] == ["2", "3"]


async def test_receivers_on_every_master_are_reached(pair: tuple[Replica, Replica]) -> None:
    """One receiver per shard channel: publishes go to each channel's own master."""
    a, b = pair
    receivers: dict[str, str] = {}
    n = 0
    while len(receivers) < SHARDS:
        email = f"user{n}@example.com"
        receivers.setdefault(cluster_channel_of(email), email)
        n += 1
    streams = {email: b.open(email) for email in receivers.values()}
    for index, email in enumerate(streams):
        await a.service.deliver(note(100 + index, receiver=email))
    for index, (email, stream) in enumerate(streams.items()):
        assert await _next(stream) == str(100 + index), email


async def test_a_dropped_subscription_connection_ends_the_streams(
    pair: tuple[Replica, Replica], valkey_cluster: EmbeddedValkeyCluster
) -> None:
    """The client library re-subscribes after a reconnect: what was published in between is
    lost for this replica, so its streams end and it confirms every channel again."""
    a, b = pair
    on_b = b.open()
    master = _master_of(valkey_cluster, cluster_channel_of(BOB))
    admin = Redis(host=master.host, port=master.port)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 2
    finally:
        await admin.aclose()
    with pytest.raises(Unavailable, match="reconnect"):
        await asyncio.wait_for(on_b.next(), 10)
    assert b.bus.losses >= 1 and b.service.hub.open_streams() == 0
    assert await b.bus.wait_up(10) and await a.bus.wait_up(10)
    again = b.open()
    await a.service.deliver(note(5))
    assert await _next(again) == "5"


def _elsewhere(cluster: EmbeddedValkeyCluster, master: EmbeddedValkey) -> str:
    """A receiver whose shard channel lives on another master than ``master``."""
    for n in itertools.count():
        email = f"user{n}@example.com"
        if _master_of(cluster, cluster_channel_of(email)) is not master:
            return email
    raise AssertionError("unreachable")


async def test_a_master_killed_under_a_subscription(
    pair: tuple[Replica, Replica], valkey_cluster: EmbeddedValkeyCluster
) -> None:
    """Only the streams of the dead master's shards end (and only their receivers are
    refused); the others keep getting live notifications through the other masters."""
    a, b = pair
    master = _master_of(valkey_cluster, cluster_channel_of(BOB))
    other = _elsewhere(valkey_cluster, master)
    on_b, on_other = b.open(), b.open(other)
    with _down(valkey_cluster, master):
        with pytest.raises(Unavailable, match="reconnect"):
            await asyncio.wait_for(on_b.next(), 10)
        assert b.service.hub.open_streams(BOB) == 0 and b.service.hub.open_streams(other) == 1
        with pytest.raises(Unavailable, match="reconnect to resume"):
            b.open()  # it could miss what is published on the dead master's channels
        with pytest.raises(Unavailable, match="retry"):
            await a.service.deliver(note(6))  # BOB's channel lives on the dead master
        assert await b.bus.ready()  # serving the shards of the masters that are up
        await a.service.deliver(note(7, receiver=other))
        assert await _next(on_other) == "7"
        again_other = b.open(other)
        await a.service.deliver(note(8, receiver=other))
        assert await _next(again_other) == "8" and await _next(on_other) == "8"
    assert await a.bus.wait_up(15) and await b.bus.wait_up(15)
    again = b.open()
    await a.service.deliver(note(9))  # the relay's retry of 6 would come here too
    assert await _next(again) == "9"


async def test_a_silent_master_ends_its_streams_within_the_heartbeat_timeout(
    pair: tuple[Replica, Replica], valkey_cluster: EmbeddedValkeyCluster
) -> None:
    _, b = pair
    on_b = b.open()
    master = _master_of(valkey_cluster, cluster_channel_of(BOB))
    assert master.pid is not None
    os.kill(master.pid, signal.SIGSTOP)  # no reset, no reply: only silence
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="reconnect"):
            await asyncio.wait_for(on_b.next(), HEARTBEAT_TIMEOUT_SECONDS + 5)
        assert time.monotonic() - started < HEARTBEAT_TIMEOUT_SECONDS + 4
    finally:
        os.kill(master.pid, signal.SIGCONT)
    valkey_cluster.wait_ok(30)
    assert await b.bus.wait_up(15)
