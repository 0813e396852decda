"""MessageService in cluster mode: the bucket relays (repairing the indexes from the events
before notifying), their dead letters seen as one list, and `main` serving on a real 3-master
Valkey Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from missive.message.v1 import message_pb2, message_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from services.common.app import Start
from services.common.bootstrap import Security
from services.common.bucket_dead_letters import BucketDeadLetters
from services.common.delivery import Relay, TransientDeliveryError
from services.common.grpc_client import peer_channel
from services.common.ports import free_port
from services.common.redis import create_cluster
from services.launcher.valkey_cluster import EmbeddedValkeyCluster
from services.message import cluster_keys as ck
from services.message.__main__ import main, wire
from services.message.cluster_store import ClusterMessageStore
from services.message.relay import CLUSTER_OUTBOXES, RepairingNotifyReceiver
from services.message.settings import Settings
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.message.conftest import (
    ADA,
    BOB,
    CAROL,
    StartNotification,
    UserServiceRunning,
)

T0 = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def store(cluster: RedisCluster) -> ClusterMessageStore:
    return ClusterMessageStore(cluster)


@pytest.fixture
async def channel(keys: Path, notification_port: int) -> AsyncIterator[grpc.aio.Channel]:
    credentials = Security.load(keys, "message").credentials
    channel = peer_channel(f"127.0.0.1:{notification_port}", credentials, target="notification")
    yield channel
    await channel.close()


def fast(bucket: int) -> Any:
    return dataclasses.replace(
        CLUSTER_OUTBOXES[bucket], backoff_initial=0.01, backoff_max=0.05, block_ms=100
    )


async def page_ids(store: ClusterMessageStore, email: str) -> list[int]:
    return [m.id for m in (await store.message_page(email, None, None, 10))[0]]


def test_one_outbox_per_bucket_in_the_slot_of_its_dead_letters() -> None:
    configs = CLUSTER_OUTBOXES
    assert [c.stream for c in configs] == [
        "m:outbox:{" + ck.BUCKET_TAGS[b] + "}" for b in range(ck.BUCKETS)
    ]
    assert {c.group for c in configs} == {"notification-relay"}
    assert all(c.dead_letter_stream == c.stream + ":dead" for c in configs)


@pytest.mark.parametrize("batches", [True, False])
async def test_the_bucket_relay_indexes_a_send_that_stopped_before_it_and_notifies(
    store: ClusterMessageStore,
    cluster: RedisCluster,
    channel: grpc.aio.Channel,
    start_notification: StartNotification,
    notification_port: int,
    monkeypatch: pytest.MonkeyPatch,
    batches: bool,
) -> None:
    async def unreachable(**_: Any) -> None:
        raise RedisConnectionError("the users' slots are unreachable")

    monkeypatch.setattr(vars(store)["_sender"], "_index", unreachable)
    outcome = await store.send_message(
        ADA, BOB, "hi", T0, request_id="acc:1", content_sha256="d", sender_name="Ada"
    )
    assert outcome.message is not None
    message = outcome.message
    monkeypatch.undo()
    assert await page_ids(store, BOB) == []  # the indexes lag until the relay reads the event

    bucket = ck.bucket_of(ADA, BOB)
    relay = Relay(cluster, fast(bucket), "test-relay", RepairingNotifyReceiver(channel, store))
    async with start_notification(notification_port, batches=batches) as notification:
        assert await relay.drain_once() == 1
    [(who, request)] = notification.received
    assert (who, request.message_id, request.receiver_email, request.sender_name) == (
        "message",
        message.id,
        BOB,
        "Ada",
    )
    assert await page_ids(store, BOB) == [message.id] == await page_ids(store, ADA)
    record = await store.idempotency_record(ADA, "acc:1")
    assert record is not None and record.message_id == message.id
    assert (
        int((await cluster.xpending(ck.outbox_stream(bucket), "notification-relay"))["pending"])
        == 0
    )


async def test_a_repair_that_cannot_reach_redis_is_retried_not_dead_lettered(
    store: ClusterMessageStore, channel: grpc.aio.Channel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(fields: Any) -> None:
        raise RedisConnectionError("down")

    monkeypatch.setattr(store, "repair", unreachable)
    receiver = RepairingNotifyReceiver(channel, store)
    event = {
        "message_id": "17",
        "sender_email": ADA,
        "receiver_email": BOB,
        "timestamp": "2025-01-14T12:00:00Z",
    }
    with pytest.raises(TransientDeliveryError, match="could not index"):
        await receiver("1-0", event)
    with pytest.raises(TransientDeliveryError, match="could not index"):
        await receiver.deliver_batch([("1-0", event)])


async def test_wire_uses_the_shells_sharded_outbox_and_revocations(
    keys: Path, cluster_url: str, user_service: UserServiceRunning
) -> None:
    """On a Cluster: a relay per bucket and the dead letters of every bucket from the shell
    (Start.bucket_outbox), revocations followed by the shell, readiness from the store."""
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_URL": cluster_url,
        "USER_SERVICE_ADDR": user_service.address,
        "NOTIFICATION_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
    }
    async with contextlib.AsyncExitStack() as resources:
        security = Security.load(keys, "message")
        start = Start("message-service", Settings.from_env(environ), security, resources)
        parts = wire(start)
        [client] = start.redis_clients
        assert isinstance(client, RedisCluster)
        assert parts.follow_revocations and parts.sessions is not None
        assert parts.outbox is not None and not parts.background
        assert len(parts.outbox.relays) == len(start.collectors) == ck.BUCKETS
        dead = parts.outbox.dead_letters
        assert isinstance(dead, BucketDeadLetters)
        assert [b.dead_letter_stream for b in dead.buckets] == [
            c.dead_letter_stream for c in CLUSTER_OUTBOXES
        ]
        assert parts.readiness is not None
        assert await parts.readiness()  # loads the slot map itself: no command ran before


async def test_main_serves_on_a_cluster_and_relays_every_bucket(
    keys: Path,
    cluster_url: str,
    cluster: RedisCluster,
    token_for: Callable[[str], str],
    user_service: UserServiceRunning,
    start_notification: StartNotification,
) -> None:
    grpc_port, rest_port, notification_port = free_port(), free_port(), free_port()
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_URL": cluster_url,
        "MESSAGE_GRPC_PORT": str(grpc_port),
        "MESSAGE_REST_PORT": str(rest_port),
        "USER_SERVICE_ADDR": user_service.address,
        "NOTIFICATION_SERVICE_ADDR": f"127.0.0.1:{notification_port}",
        "SHUTDOWN_GRACE": "1",
        "LOG_LEVEL": "WARNING",
    }
    stop = asyncio.Event()
    address = f"127.0.0.1:{grpc_port}"
    pairs = [(ADA, BOB), (BOB, CAROL), (CAROL, ADA), (ADA, ADA)]
    async with start_notification(notification_port) as notification:
        server = asyncio.create_task(main(environ, stop))
        try:
            async with grpc.aio.insecure_channel(address) as client:
                await wait_for_status(client, SERVING, within=10)
                stub = message_pb2_grpc.MessageServiceStub(client)
                sent = [
                    (
                        await stub.SendMessage(
                            message_pb2.SendMessageRequest(
                                sender_email=sender,
                                receiver_email=receiver,
                                content=f"{sender} to {receiver}",
                                client_request_id=f"k{n}",
                            ),
                            metadata=(("authorization", f"Bearer {token_for(sender)}"),),
                            timeout=5,
                        )
                    ).message
                    for n, (sender, receiver) in enumerate(pairs)
                ]
            assert len({m.id % ck.BUCKETS for m in sent}) > 1  # several buckets, several relays
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
                assert (await http.get("/health")).json() == {"status": "SERVING"}
                listed = await http.get(
                    "/messages",
                    params={"email": ADA},
                    headers={"Authorization": f"Bearer {token_for(ADA)}"},
                )
                assert [m["id"] for m in listed.json()["messages"]] == sorted(
                    (m.id for m in sent if ADA in (m.sender_email, m.receiver_email)),
                    reverse=True,
                )
            deadline = time.monotonic() + 10
            while len(notification.received) < len(sent) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert sorted(r.message_id for _, r in notification.received) == sorted(
                m.id for m in sent
            )
        finally:
            stop.set()
            await asyncio.wait_for(server, timeout=10)
    assert not await cluster.exists("message_id_counter", "outbox:notifications")


async def test_a_master_down_fails_only_the_requests_that_need_its_slots(
    tmp_path: Path,
) -> None:
    """Its own cluster (the shared one stays whole): with a master stopped, the service stays
    ready, a send that needs the master fails with a connection error (UNAVAILABLE at the
    edges) and stores nothing anywhere, the others go on; once it is back, everything works."""
    valkey = EmbeddedValkeyCluster(tmp_path / "cluster", masters=3)
    valkey.start()
    client = create_cluster(valkey.url)
    try:
        await client.initialize()
        store = ClusterMessageStore(client)
        down = valkey.masters[2]
        down_port = down.port

        def on_down(key: str) -> bool:
            node = client.get_node_from_key(key)
            assert node is not None
            return node.port == down_port

        def slots_of(sender: str, receiver: str) -> list[str]:
            return [
                ck.account_key(sender),
                ck.account_key(receiver),
                ck.conversation_key(sender, receiver),
            ]

        pairs = [(f"s{n}@example.com", f"r{n}@example.com") for n in range(200)]
        alive = next(p for p in pairs if not any(on_down(k) for k in slots_of(*p)))
        bucket_down = next(
            p
            for p in pairs
            if on_down(ck.conversation_key(*p)) and not any(on_down(ck.account_key(e)) for e in p)
        )
        down.stop()
        assert await store.ready()
        with pytest.raises(RedisConnectionError):
            await store.send_message(*bucket_down, "lost?", T0, request_id="acc:x")
        stored = await store.send_message(*alive, "fine", T0)
        assert stored.message is not None
        down.start()
        valkey.wait_ok()
        # Nothing half-done is visible: the refused send left no message and no index entry.
        assert await store.message_page(bucket_down[1], None, None, 10) == ([], None)
        again = await store.send_message(*bucket_down, "after", T0)
        assert again.message is not None
        assert [m.id for m in (await store.message_page(bucket_down[1], None, None, 10))[0]] == [
            again.message.id
        ]
    finally:
        await client.aclose()
        valkey.stop()
