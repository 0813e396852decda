"""The fan-out across replicas: two FrontendService instances on one real Valkey."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.common.domain import InvalidArgument, Principal, Unavailable
from services.common.redis import create_redis
from services.frontend.fanout import HEARTBEAT_TIMEOUT_SECONDS, SHARDS, Bus, channel_of, protocol
from services.frontend.fanout import bus as bus_module
from services.frontend.fanout import cluster as cluster_module
from services.frontend.hub import Hub, Subscription
from services.frontend.service import FrontendService
from services.launcher.valkey import EmbeddedValkey
from tests.unit.frontend.test_service import BOB, ListSource, note


class Replica:
    def __init__(self, url: str) -> None:
        self.redis: Redis = create_redis(url, 0)
        self.bus = Bus(self.redis)
        self.service = FrontendService(ListSource([]), Hub(), bus=self.bus)
        self.task = asyncio.create_task(self.bus.run())

    def open(self, email: str = BOB) -> Subscription:
        principal = Principal(kind="user", name=email, account_id="")
        return self.service.open(principal, email)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.redis.aclose()


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(redis_url), Replica(redis_url)
    try:
        assert await a.bus.wait_up(5) and await b.bus.wait_up(5)
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _next(subscription: Subscription, within: float = 2.0) -> str:
    return (await asyncio.wait_for(subscription.next(), within)).id


async def test_a_push_to_one_replica_shows_on_both_once(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    on_a, on_b = a.open(), b.open()
    assert await a.service.deliver(note(1)) == 1  # its own stream; B's is counted by B
    assert await _next(on_a) == "1" and await _next(on_b) == "1"
    # The relay's redelivery, to the other replica this time: shown nowhere again.
    assert await b.service.deliver(note(1)) == 0
    assert await a.service.deliver(note(2)) == 1
    assert await _next(on_a) == "2" and await _next(on_b) == "2"  # not 1 again, on either


async def test_a_batch_is_published_once_and_invalid_items_are_refused_alone(
    pair: tuple[Replica, Replica],
) -> None:
    a, b = pair
    on_b = b.open()
    results = await a.service.deliver_many([(note(3), ""), (None, ""), (note(4), "")])
    assert results[0] == 0 and results[2] == 0 and isinstance(results[1], InvalidArgument)
    assert [await _next(on_b), await _next(on_b)] == ["3", "4"]


async def test_a_lost_subscription_ends_the_streams_and_refuses_new_ones_until_back(
    pair: tuple[Replica, Replica], redis_url: str
) -> None:
    a, b = pair
    on_b = b.open()
    admin = create_redis(redis_url, 0)
    try:
        await admin.client_kill_filter(_type="pubsub")
    finally:
        await admin.aclose()
    with pytest.raises(Unavailable, match="reconnect"):
        await asyncio.wait_for(on_b.next(), 5)
    assert b.service.hub.open_streams() == 0
    assert await b.bus.wait_up(5)  # subscribed again: streams are accepted
    again = b.open()
    await a.service.deliver(note(5))
    assert await _next(again) == "5"
    assert b.bus.losses >= 1


async def test_without_valkey_pushes_fail_and_streams_are_refused(
    fresh_valkey: EmbeddedValkey,
) -> None:
    replica = Replica(fresh_valkey.url)
    try:
        assert await replica.bus.wait_up(5)
        on = replica.open()
        fresh_valkey.stop()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(on.next(), 5)
        with pytest.raises(Unavailable, match="reconnect to resume"):
            replica.open()
        with pytest.raises(Unavailable, match="retry"):
            await replica.service.deliver(note(6))
        assert not await replica.bus.ready()
    finally:
        await replica.close()


def test_channels_are_sharded_with_hash_tags() -> None:
    channels = {channel_of(f"user{n}@example.com") for n in range(500)}
    assert len(channels) == SHARDS
    assert all(c.startswith("missive:frontend:live:{") and c.endswith("}") for c in channels)
    assert channel_of(BOB) == channel_of(BOB)


async def test_a_silent_valkey_ends_the_streams_within_the_heartbeat_timeout(
    fresh_valkey: EmbeddedValkey,
) -> None:
    replica = Replica(fresh_valkey.url)
    try:
        assert await replica.bus.wait_up(5)
        on = replica.open()
        assert fresh_valkey.pid is not None
        os.kill(fresh_valkey.pid, signal.SIGSTOP)  # no reset, no reply: only silence
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="reconnect"):
                await asyncio.wait_for(on.next(), HEARTBEAT_TIMEOUT_SECONDS + 5)
            print(f"a silent Valkey ended the stream after {time.monotonic() - started:.1f}s")
        finally:
            os.kill(fresh_valkey.pid, signal.SIGCONT)
        assert await replica.bus.wait_up(10)  # and it subscribes again once Valkey answers
    finally:
        await replica.close()


TIMING = ("RETRY_SECONDS", "READ_TIMEOUT_SECONDS", "HEARTBEAT_SECONDS", "HEARTBEAT_TIMEOUT_SECONDS")


def test_the_buses_read_the_timing_constants_from_the_protocol_module() -> None:
    """Neither bus module holds a copy that setting ``protocol.X`` would leave behind."""
    for module in (bus_module, cluster_module):
        assert not set(TIMING) & vars(module).keys(), module.__name__


async def test_a_timing_constant_set_on_the_protocol_module_reaches_the_bus(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(protocol, "READ_TIMEOUT_SECONDS", 0.05)
    listener = create_redis(redis_url, 0)
    pubsub = listener.pubsub()
    replica = Replica(redis_url)
    try:
        await pubsub.subscribe(replica.bus.channels[0])  # where the heartbeats go
        assert await replica.bus.wait_up(5)
        beats, until = 0, time.monotonic() + 1.0
        while time.monotonic() < until:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None and message["data"] == f"{replica.bus.origin} beat":
                beats += 1
        assert beats >= 5  # one every 2 s unpatched: at most one in this second
    finally:
        await replica.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
