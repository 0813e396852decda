"""NotificationService's cluster layout on a real 3-master Valkey Cluster: every script on one
slot, the store's and the service's scenarios of the standalone layout, and the wiring (one
relay per bucket pushing to FrontendService)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from missive.notification.v1 import notification_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from services.common.app import Start
from services.common.bootstrap import Security
from services.common.bucket_dead_letters import BucketDeadLetters
from services.common.domain import Principal
from services.common.grpc_client import peer_channel
from services.common.ports import free_port
from services.common.redis import create_cluster
from services.notification import keys as nkeys
from services.notification.__main__ import main, wire
from services.notification.models import CreateResult
from services.notification.records import decode_event
from services.notification.relay import CLUSTER_OUTBOXES
from services.notification.service import NotificationService
from services.notification.settings import Settings
from services.notification.store import DEDUPE_TTL_SECONDS, UNSUBSCRIBED, RedisNotificationStore
from tests.helpers.accounts import account_id_of
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.notification.conftest import (
    ADA,
    BOB,
    EVE,
    StartFrontend,
    create_request,
    new,
    stream_fields,
)

# The scenarios of the standalone layout that go through the store's API only, run here on the
# cluster layout (this module's `redis` and `store` fixtures replace those of the conftest).
from tests.unit.notification.test_accounts import (  # noqa: F401
    test_a_later_account_never_sees_the_earlier_ones_notifications,
    test_a_replay_for_the_later_account_lists_nothing_of_the_earlier_one,
    test_bad_input_claims_nothing,
)
from tests.unit.notification.test_service import (  # noqa: F401
    test_allowlisted_services_act_on_any_email,
    test_bad_paging_is_invalid_argument,
    test_create_normalises_emails_and_stores_an_unread_notification,
    test_mark_read_and_mark_all,
    test_only_services_create_notifications,
    test_pagination_is_newest_first_with_unread_only_and_unread_count,
    test_subscription_calls_are_idempotent,
    test_users_act_only_on_their_own_data,
)
from tests.unit.notification.test_store import (  # noqa: F401
    test_everyone_is_subscribed_by_default,
    test_large_message_ids_survive_the_scripts_exactly,
    test_mark_all_read_counts_the_ones_that_changed,
    test_mark_read_rewrites_only_that_notification,
)

CAROL = "carol@example.com"
RECEIVERS = [f"user{i:02d}@example.com" for i in range(40)] + ["a{b}c@example.com"]


@pytest.fixture
def redis(cluster: RedisCluster) -> RedisCluster:
    """The cluster in place of the conftest's standalone client (tests/conftest.py)."""
    return cluster


@pytest.fixture
def store(redis: RedisCluster) -> RedisNotificationStore:
    return RedisNotificationStore(redis, retention=1000, layout=nkeys.CLUSTER)


def one_slot(key_list: list[str]) -> bool:
    return len({key_slot(key.encode()) for key in key_list}) == 1


async def every_key(redis: RedisCluster) -> list[str]:
    return sorted([str(key) async for key in redis.scan_iter(count=1000)])


# -- the layout: names, buckets, and one slot per script ------------------------------------------


def test_key_names_carry_the_receivers_bucket_tag() -> None:
    tag = nkeys.tag(BOB)
    assert tag == "{" + nkeys.BUCKET_TAGS[nkeys.bucket(BOB)] + "}"
    layout = nkeys.CLUSTER
    assert layout.notifications(BOB) == f"n:notifications:{tag}:{BOB}"
    assert layout.subscriptions(BOB) == f"n:subscriptions:{tag}:{BOB}"
    assert layout.account(BOB) == f"n:account:{tag}:{BOB}"
    assert layout.dedupe(BOB, 42) == f"n:for_message:{tag}:42"
    assert layout.outbox(BOB) == f"n:outbox:frontend:{tag}"
    assert layout.streams == tuple(c.stream for c in CLUSTER_OUTBOXES)
    assert {c.group for c in CLUSTER_OUTBOXES} == {"frontend-relay"}
    # The standalone layout keeps today's names.
    standalone = nkeys.STANDALONE
    assert (standalone.notifications(BOB), standalone.subscriptions(BOB)) == (
        f"notifications:{BOB}",
        "subscriptions",
    )
    assert (standalone.account(BOB), standalone.dedupe(BOB, 42)) == (
        f"account:{BOB}",
        "notification:for_message:42",
    )
    assert standalone.outbox(BOB) == "outbox:frontend" and standalone.streams == (
        "outbox:frontend",
    )


def test_bucket_tags_spread_evenly_and_receivers_spread_over_buckets() -> None:
    slots = [key_slot(tag.encode()) for tag in nkeys.BUCKET_TAGS]
    width = 16384 // nkeys.BUCKETS
    assert [slot // width for slot in slots] == list(range(nkeys.BUCKETS))
    assert {nkeys.bucket(email) for email in RECEIVERS} == set(range(nkeys.BUCKETS))


@pytest.mark.parametrize("receiver", [BOB, "a{b}c@example.com", "}{@example.com"])
def test_every_script_touches_one_slot(receiver: str) -> None:
    unconnected = create_cluster("redis+cluster://127.0.0.1:1")  # registers scripts only
    store = RedisNotificationStore(unconnected, retention=10, layout=nkeys.CLUSTER)
    _, create_keys, _ = store._item(replace(new(2**63 - 1), receiver_email=receiver))
    layout = nkeys.CLUSTER
    scripts = {
        "CREATE / CREATE_MANY per item": create_keys,
        "CLAIM / ERASE": [
            layout.account(receiver),
            layout.notifications(receiver),
            layout.subscriptions(receiver),
        ],
        "MARK_READ / MARK_ALL_READ": [layout.notifications(receiver)],
        "PAGE (with the account check)": [
            layout.notifications(receiver),
            layout.account(receiver),
        ],
        "outbox and dead letters": [
            nkeys.cluster_outbox_stream(nkeys.bucket(receiver)),
            nkeys.cluster_outbox_dead_letters(nkeys.bucket(receiver)),
        ],
    }
    assert len(create_keys) == 5
    for name, key_list in scripts.items():
        assert one_slot(key_list), name


# -- the store: the scenarios of tests/unit/notification/test_store.py on the cluster layout -----


async def test_create_stores_the_notification_its_dedupe_key_and_one_outbox_entry(
    store: RedisNotificationStore, redis: RedisCluster
) -> None:
    result = await store.create(new(42))
    assert result.created and result.subscribed
    assert result.notification == new(42).as_notification()
    layout = nkeys.CLUSTER
    assert len(await redis.lrange(layout.notifications(BOB), 0, -1)) == 1
    assert await redis.get(layout.dedupe(BOB, 42)) == "42"
    assert 0 < await redis.ttl(layout.dedupe(BOB, 42)) <= DEDUPE_TTL_SECONDS
    [fields] = await stream_fields(redis, layout.outbox(BOB))  # type: ignore[arg-type]
    assert decode_event(fields) == result.notification
    assert await every_key(redis) == sorted(
        [layout.notifications(BOB), layout.dedupe(BOB, 42), layout.outbox(BOB)]
    )
    again = await store.create(new(42))
    assert not again.created and again.notification == result.notification
    assert await redis.xlen(layout.outbox(BOB)) == 1


async def test_retention_and_a_repeat_after_it(redis: RedisCluster) -> None:
    store = RedisNotificationStore(redis, retention=2, layout=nkeys.CLUSTER)
    for message_id in (1, 2, 3):
        await store.create(new(message_id))
    again = await store.create(new(1))
    assert not again.created and again.notification == new(1).as_notification()
    assert [n.message_id for n in await store.list_all(BOB)] == [3, 2]
    assert await redis.xlen(nkeys.CLUSTER.outbox(BOB)) == 3


async def test_unsubscribed_receiver_gets_nothing_stored_or_pushed(
    store: RedisNotificationStore, redis: RedisCluster
) -> None:
    await store.set_subscribed(BOB, False)
    result = await store.create(new(5))
    assert (result.notification, result.created, result.subscribed) == (None, False, False)
    subscription = nkeys.CLUSTER.subscriptions(BOB)
    assert await every_key(redis) == [subscription]
    assert await redis.hgetall(subscription) == {BOB: "0"}  # one hash per user
    await store.set_subscribed(BOB, True)
    assert (await store.create(new(5))).created
    assert await redis.xlen(nkeys.CLUSTER.outbox(BOB)) == 1


async def test_a_batch_has_each_items_outcome_and_writes_as_one_by_one(
    store: RedisNotificationStore, redis: RedisCluster
) -> None:
    """The mixed batch of test_create_many, its receivers in several buckets: split into one
    script per bucket, each item has the outcome and the writes it has alone."""

    async def prepare() -> None:
        await redis.flushall(target_nodes=RedisCluster.PRIMARIES)
        await redis.hset(nkeys.CLUSTER.subscriptions(EVE), EVE, UNSUBSCRIBED)
        await redis.set(nkeys.CLUSTER.account(CAROL), "b" * 32)

    async def contents() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key in await every_key(redis):
            kind = await redis.type(key)
            if kind == "list":
                found[key] = await redis.lrange(key, 0, -1)
            elif kind == "hash":
                found[key] = await redis.hgetall(key)
            elif kind == "stream":
                found[key] = await stream_fields(redis, key)  # type: ignore[arg-type]
            else:
                found[key] = await redis.get(key)
        return found

    batch = [
        new(1),
        new(2, receiver=EVE),  # unsubscribed
        new(3, receiver=ADA, sender=BOB),
        new(1),  # a repeat within the batch
        replace(new(4, receiver=CAROL), receiver_account_id="a" * 32),  # deleted account
        replace(new(5, receiver=ADA, sender=BOB), receiver_account_id=account_id_of(ADA)),
        *(new(10 + i, receiver=email) for i, email in enumerate(RECEIVERS)),
    ]
    assert len({nkeys.bucket(item.receiver_email) for item in batch}) == nkeys.BUCKETS
    await prepare()
    together = await store.create_many(batch)
    written = await contents()
    await prepare()
    alone: list[CreateResult] = [await store.create(item) for item in batch]
    assert together == alone
    assert [(r.created, r.subscribed) for r in together[:6]] == [
        (True, True),
        (False, False),
        (True, True),
        (False, True),
        (False, False),
        (True, True),
    ]
    assert all(r.created for r in together[6:])
    assert written == await contents()
    again = await store.create_many(batch)  # redelivered after a crash: nothing twice
    assert not any(r.created for r in again)
    assert written == await contents()
    assert await store.create_many([]) == []


async def test_erase_account_and_a_late_notification(
    store: RedisNotificationStore, redis: RedisCluster
) -> None:
    old, later = "0000000000000001" + "a" * 16, "0000000000000002" + "b" * 16
    await store.create(replace(new(1), receiver_account_id=old))
    await store.set_subscribed(BOB, False)
    assert await store.erase_account(BOB, old) == 1
    assert await store.erase_account(BOB, old) == 0
    layout = nkeys.CLUSTER
    assert not await redis.exists(layout.notifications(BOB), layout.subscriptions(BOB))
    assert await redis.get(layout.account(BOB)) == f"{old}:erased"
    late = await store.create(replace(new(2), receiver_account_id=old))
    assert late.notification is None
    assert await store.claim(BOB, later)
    assert not await store.claim(BOB, old)
    fresh = await store.create(replace(new(3), receiver_account_id=later))
    assert fresh.created
    events = await stream_fields(redis, layout.outbox(BOB))  # type: ignore[arg-type]
    assert [event["receiver_account_id"] for event in events] == [old, later]


async def test_owned_page_checks_the_account_with_the_page(
    store: RedisNotificationStore,
) -> None:
    old, later = "0000000000000001" + "a" * 16, "0000000000000002" + "b" * 16
    await store.create(replace(new(1), receiver_account_id=old))
    page = await store.owned_page(BOB, old, unread_only=False, offset=0, size=20)
    assert page is not None and [n.message_id for n in page[0]] == [1]
    assert await store.erase_account(BOB, old) == 1
    assert await store.owned_page(BOB, old, unread_only=False, offset=0, size=20) is None
    assert await store.owned_page(BOB, later, unread_only=False, offset=0, size=20) == ([], 0, 0)
    assert await store.owned_page(BOB, old, unread_only=True, offset=0, size=20) is None


async def test_ping(store: RedisNotificationStore) -> None:
    assert await store.ping()


# -- the wiring in cluster mode: a relay per bucket pushes every receiver's notifications --------


async def test_wire_pushes_every_bucket_to_the_frontend(
    keys: Path,
    cluster_url: str,
    redis: RedisCluster,
    start_frontend: StartFrontend,
    frontend_port: int,
) -> None:
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_CLUSTER_NODES": cluster_url.removeprefix("redis+cluster://"),
        "FRONTEND_SERVICE_ADDR": f"127.0.0.1:{frontend_port}",
    }
    security = Security.load(keys, "notification")
    async with start_frontend(frontend_port) as frontend, contextlib.AsyncExitStack() as resources:
        start = Start("notification-service", Settings.from_env(environ), security, resources)
        parts = wire(start)
        [client] = start.redis_clients
        assert isinstance(client, RedisCluster)
        assert parts.outbox is not None
        assert isinstance(parts.outbox.dead_letters, BucketDeadLetters)
        relays = [relay.run for relay in parts.outbox.relays]
        assert not parts.background  # the shell runs every bucket's relay
        assert len(relays) == nkeys.BUCKETS
        tasks = [asyncio.create_task(relay()) for relay in relays]
        try:
            service: NotificationService = parts.service
            batch = [
                service.new_notification(
                    Principal("service", "message"),
                    message_id=100 + i,
                    sender_email=ADA,
                    receiver_email=email,
                    timestamp=new(100 + i).timestamp,
                )
                for i, email in enumerate(RECEIVERS[:40])
            ]
            results = await service.create_notifications(Principal("service", "message"), batch)
            assert all(r.created for r in results)
            for _ in range(200):
                if len(frontend.received) >= len(batch):
                    break
                await asyncio.sleep(0.05)
            pushed = sorted((n.receiver_email, n.message_id) for _, n in frontend.received)
            assert pushed == sorted((item.receiver_email, item.message_id) for item in batch)
            assert {name for name, _ in frontend.received} == {"notification"}
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_main_in_cluster_mode_serves_and_relays_to_the_frontend(
    keys: Path, cluster_url: str, redis: RedisCluster, start_frontend: StartFrontend
) -> None:
    grpc_port, rest_port, frontend_port = free_port(), free_port(), free_port()
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_URL": cluster_url,
        "NOTIFICATION_GRPC_PORT": str(grpc_port),
        "NOTIFICATION_REST_PORT": str(rest_port),
        "FRONTEND_SERVICE_ADDR": f"127.0.0.1:{frontend_port}",
        "SHUTDOWN_GRACE": "1",
        "LOG_LEVEL": "WARNING",
    }
    stop = asyncio.Event()
    address = f"127.0.0.1:{grpc_port}"
    async with start_frontend(frontend_port) as frontend:
        server = asyncio.create_task(main(environ, stop))
        try:
            async with grpc.aio.insecure_channel(address) as plain:
                await wait_for_status(plain, SERVING, within=10)
            credentials = Security.load(keys, "message").credentials
            async with peer_channel(address, credentials, target="notification") as channel:
                stub = notification_pb2_grpc.NotificationServiceStub(channel)
                replies = [
                    await stub.CreateNotification(create_request(n, receiver=email), timeout=5)
                    for n, email in enumerate(RECEIVERS[:8], start=1)
                ]
            assert all(reply.created for reply in replies)
            for _ in range(200):
                if len(frontend.received) >= len(replies):
                    break
                await asyncio.sleep(0.05)
            assert sorted(n.message_id for _, n in frontend.received) == list(range(1, 9))
            assert await redis.exists(nkeys.CLUSTER.notifications(RECEIVERS[0]))
        finally:
            stop.set()
            await asyncio.wait_for(server, timeout=10)
