"""UserService's cluster layout on a real 3-master Valkey Cluster: every script on one slot, the
store's scenarios of the standalone layout, the service's own scenarios, and the entry point."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc.aio
import httpx
import pytest
from missive.user.v1 import user_pb2, user_pb2_grpc
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from services.common.app import Start
from services.common.auth import UserTokenIssuer
from services.common.bootstrap import Security
from services.common.bucket_dead_letters import BucketDeadLetters
from services.common.domain import Principal
from services.common.ports import free_port
from services.user import keys as ukeys
from services.user.__main__ import main, wire
from services.user.cluster_store import ClusterUserStore
from services.user.models import LoginPolicy, StoredUser
from services.user.operators import set_role
from services.user.passwords import Passwords
from services.user.relay import CLUSTER_OUTBOXES
from services.user.service import Revoked, UserService
from services.user.settings import HashParams, LoginLimits, Settings
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.user.conftest import ALICE, ALICE_PASSWORD, BOB, CLIENT, MakeService
from tests.unit.user.test_erasure import serve

# The service's scenarios of the standalone layout, run here on the cluster store (this
# module's `make_service` and `redis` fixtures replace those of the conftest).
from tests.unit.user.test_service import (  # noqa: F401
    test_account_locks_after_max_failures_then_unlocks,
    test_authenticate_issues_a_token_for_the_normalised_email,
    test_authenticate_rejects_bad_input_before_counting,
    test_client_is_throttled_across_accounts,
    test_concurrent_registrations_create_one_account,
    test_failures_from_other_clients_do_not_lock_the_account,
    test_list_users_pages_in_email_order,
    test_only_operators_list_users,
    test_parallel_guesses_cannot_exceed_the_limit,
    test_register_refuses_a_taken_email_in_any_case,
    test_register_rejects_bad_input_and_writes_nothing,
    test_services_may_ask_about_anyone,
    test_successes_do_not_use_up_the_client_budget,
    test_tokens_name_the_account_and_its_version,
)
from tests.unit.user.test_store import T0

# Emails with the characters a key could trip on: braces (a hash tag inside the email must not
# move the key), and many buckets.
EMAILS = [f"user{i:02d}@example.com" for i in range(40)] + ["a{b}c@example.com", "}{@example.com"]
POLICY = LoginPolicy(3, 60, 2, 900, 10, 1000, 60_000, 900, 16, 86400)


def user(email: str = ALICE, name: str = "Alice", account_id: str = "") -> StoredUser:
    return StoredUser(
        name, email, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", T0, T0, account_id
    )


@pytest.fixture
def redis(cluster: RedisCluster) -> RedisCluster:
    """The cluster in place of the conftest's standalone client (tests/conftest.py)."""
    return cluster


@pytest.fixture
def make_service(redis: RedisCluster, issuer: UserTokenIssuer) -> MakeService:
    """A UserService over the cluster store; keyword arguments override its parts."""

    def make(
        *,
        limits: LoginLimits | None = None,
        params: HashParams | None = None,
        concurrency: int = 4,
        revoked: Revoked | None = None,
    ) -> UserService:
        async def nobody(_email: str) -> None:
            return None

        return UserService(
            ClusterUserStore(redis),
            Passwords(params or HashParams(), concurrency),
            issuer,
            limits,
            revoked=revoked or nobody,
        )

    return make


@pytest.fixture
def store(redis: RedisCluster) -> ClusterUserStore:
    return ClusterUserStore(redis)


def one_slot(key_list: list[str]) -> bool:
    return len({key_slot(key.encode()) for key in key_list}) == 1


# -- the layout: names, buckets, and one slot per script ------------------------------------------


def test_key_names_carry_the_bucket_tag() -> None:
    tag = ukeys.tag(ALICE)
    assert tag == "{" + ukeys.BUCKET_TAGS[ukeys.bucket(ALICE)] + "}"
    assert ukeys.cluster_user_key(ALICE) == f"u:user:{tag}:{ALICE}"
    assert ukeys.cluster_failures_key(ALICE, "::1") == f"u:login_failures:{tag}:{ALICE}:::1"
    assert ukeys.cluster_client_key("a b") == "u:login_clients:{ab}"
    assert ukeys.cluster_accounts_dead_letters(3) == ukeys.cluster_accounts_outbox(3) + ":dead"
    every = [
        ukeys.cluster_user_key(ALICE),
        ukeys.cluster_users_index(0),
        ukeys.cluster_account_ids(ALICE),
        ukeys.cluster_accounts_outbox(0),
        ukeys.cluster_client_key(CLIENT),
        ukeys.cluster_register_key(CLIENT),
    ]
    assert all(key.startswith(ukeys.CLUSTER_PREFIX) for key in every)


def test_bucket_tags_spread_evenly_over_the_slots() -> None:
    slots = [key_slot(tag.encode()) for tag in ukeys.BUCKET_TAGS]
    width = 16384 // ukeys.BUCKETS
    assert [slot // width for slot in slots] == list(range(ukeys.BUCKETS))
    # 3 masters owning equal ranges each hold 5 or 6 buckets.
    owners = [slot * 3 // 16384 for slot in slots]
    assert sorted(owners.count(m) for m in range(3)) == [5, 5, 6]
    assert {ukeys.bucket(email) for email in EMAILS} == set(range(ukeys.BUCKETS))


@pytest.mark.parametrize("email", [ALICE, *EMAILS[-2:]])
@pytest.mark.parametrize("client", [CLIENT, "{x}", "}"])
def test_every_script_touches_one_slot(email: str, client: str) -> None:
    for script, count in (("create", 2), ("replace", 1), ("delete", 5), ("account", 3)):
        key_list = ClusterUserStore.script_keys(script, email, client)
        assert len(key_list) == count and one_slot(key_list), script
        assert all(ukeys.tag(email) in key for key in key_list)
    assert len(ClusterUserStore.script_keys("client", email, client)) == 1
    index = ukeys.bucket(email)
    assert ClusterUserStore.script_keys("delete", email)[2] == ukeys.cluster_accounts_outbox(index)
    assert one_slot([ukeys.cluster_account_ids(email), ukeys.cluster_user_key(email)])
    with pytest.raises(ValueError):
        ClusterUserStore.script_keys("other", email)


def test_outbox_buckets_have_one_relay_each() -> None:
    assert [c.stream for c in CLUSTER_OUTBOXES] == [
        ukeys.cluster_accounts_outbox(i) for i in range(ukeys.BUCKETS)
    ]
    assert {c.group for c in CLUSTER_OUTBOXES} == {"erasure-relay"}
    assert all(one_slot([c.stream, c.dead_letter_stream]) for c in CLUSTER_OUTBOXES)


# -- the store: the scenarios of tests/unit/user/test_store.py on the cluster layout --------------


async def test_create_writes_document_and_index_together(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    assert await store.create(user())
    document = json.loads(str(await redis.get(ukeys.cluster_user_key(ALICE))))
    assert document["email"] == ALICE and document["created_at"] == "2025-01-14T12:00:00.123Z"
    index = ukeys.cluster_users_index(ukeys.bucket(ALICE))
    assert await redis.zrange(index, 0, -1, withscores=True) == [(ALICE, 0.0)]
    assert await store.get(ALICE) == user()
    assert await store.exists(ALICE) and not await store.exists(BOB)
    assert await store.get(BOB) is None
    assert not await store.create(user(name="Impostor"))
    assert (await store.get(ALICE)) == user()


async def test_concurrent_creates_leave_one_user(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    results = await asyncio.gather(*(store.create(user(name=f"n{i}")) for i in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await redis.dbsize() == 2


async def test_get_many_reads_every_bucket_in_order(store: ClusterUserStore) -> None:
    for email in EMAILS[:10]:
        await store.create(user(email))
    wanted = [EMAILS[3], BOB, EMAILS[0], EMAILS[9], EMAILS[3]]
    found = await store.get_many(wanted)
    assert [u.email if u else None for u in found] == [
        EMAILS[3],
        None,
        EMAILS[0],
        *EMAILS[9:10],
        EMAILS[3],
    ]
    assert await store.get_many([]) == []


async def test_delete_removes_both_and_queues_the_erasure_in_the_bucket(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    aid = "0" * 16 + "a" * 16
    await store.create(user(account_id=aid))
    await store.create(user(BOB))
    stored = await store.get(ALICE)
    assert stored is not None
    await redis.hset(ukeys.cluster_account_key(ALICE), "failures", "3")
    await redis.sadd(ukeys.cluster_known_clients_key(ALICE), CLIENT)
    assert await store.delete(stored)
    assert not await store.exists(ALICE)
    assert not await redis.exists(
        ukeys.cluster_account_key(ALICE), ukeys.cluster_known_clients_key(ALICE)
    )
    users, _, total = await store.list_page(0, 10)
    assert [u.email for u in users] == [BOB] and total == 1
    assert not await store.delete(stored)
    events: Any = await redis.xrange(ukeys.cluster_accounts_outbox(ukeys.bucket(ALICE)))
    assert [fields for _, fields in events] == [{"email": ALICE, "account_id": aid}]


async def test_delete_refuses_a_changed_record(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    await store.create(user())
    stale = await store.get(ALICE)
    assert stale is not None
    assert await store.replace(stale, replace(stale, name="Alice B."))
    assert not await store.replace(stale, replace(stale, name="Lost update"))
    assert not await store.delete(stale)
    assert (await store.get(ALICE)) == replace(stale, name="Alice B.")
    assert not await redis.exists(ukeys.cluster_accounts_outbox(ukeys.bucket(ALICE)))


async def test_delete_repairs_an_orphan_index_entry_and_replace_never_recreates(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    await redis.zadd(ukeys.cluster_users_index(ukeys.bucket(ALICE)), {ALICE: 0})
    assert await store.list_page(0, 10) == ([], 1, 1)  # skipped, counted as read
    ghost = replace(user(), revision="{}")
    assert not await store.delete(ghost)
    assert not await store.replace(ghost, replace(ghost, name="Ghost"))
    assert await redis.dbsize() == 0


async def test_list_page_merges_the_buckets_in_email_order(store: ClusterUserStore) -> None:
    for email in reversed(EMAILS):
        await store.create(user(email))
    expected = sorted(EMAILS, key=lambda e: e.encode())
    for size in (1, 7, 50):
        seen: list[str] = []
        offset = 0
        while True:
            users, read, total = await store.list_page(offset, size)
            assert total == len(EMAILS) and read == len(users) <= size
            seen += [u.email for u in users]
            offset += read
            if read < size or offset >= total:
                break
        assert seen == expected
    assert await store.list_page(len(EMAILS), 5) == ([], 0, len(EMAILS))
    assert await store.list_page(2**53 - 1, 100) == ([], 0, len(EMAILS))


async def every_page(store: ClusterUserStore, offset: int, size: int) -> list[str]:
    users, read, _ = await store.list_page(offset, size)
    assert read == len(users)
    return [u.email for u in users]


async def test_deep_pages_read_windows_of_each_bucket_with_exact_ranks(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    emails = [f"n{i * 7919 % 1000:03d}.{i}@example.com" for i in range(300)]
    for start in range(0, len(emails), 50):
        await asyncio.gather(*(store.create(user(e)) for e in emails[start : start + 50]))
    expected = sorted(emails)
    for offset in (0, 1, 15, 99, 100, 150, 255, 290, 299):
        for size in (1, 10, 100):
            assert await every_page(store, offset, size) == expected[offset : offset + size]


async def test_pages_stay_exact_when_the_buckets_are_skewed(store: ClusterUserStore) -> None:
    """Every email of one bucket sorts before every email of another: the first windows miss
    the ranks, and the store widens them until they hold the page."""
    first = [e for e in (f"a{i:04d}@example.com" for i in range(3000)) if ukeys.bucket(e) == 0]
    last = [e for e in (f"z{i:04d}@example.com" for i in range(3000)) if ukeys.bucket(e) == 1]
    emails = first[:120] + last[:120]
    await asyncio.gather(*(store.create(user(e)) for e in emails))
    expected = sorted(emails)
    for offset, size in ((0, 50), (100, 10), (115, 10), (120, 7), (200, 100), (239, 5)):
        assert await every_page(store, offset, size) == expected[offset : offset + size]


async def test_account_ids_sort_by_creation_per_email_and_never_repeat(
    store: ClusterUserStore,
) -> None:
    ids = [await store.new_account_id(ALICE) for _ in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    others = [await store.new_account_id(email) for email in EMAILS]
    prefixes = {i[:16] for i in [*ids, *others]}  # the sequence and bucket part alone
    assert len(prefixes) == len(ids) + len(others)


async def test_admission_reserves_the_client_then_the_account(
    store: ClusterUserStore, redis: RedisCluster
) -> None:
    client = ukeys.cluster_client_key(CLIENT)
    assert (await store.admit_login(ALICE, CLIENT, POLICY)).admitted
    assert (await store.admit_login(ALICE, CLIENT, POLICY)).admitted
    assert await redis.get(client) == "2"
    assert await redis.get(ukeys.cluster_failures_key(ALICE, CLIENT)) == "2"
    refused = await store.admit_login(ALICE, CLIENT, POLICY)  # the pair limit (2)
    assert (refused.admitted, refused.scope) == (False, "pair")
    assert 899 <= refused.retry_after <= 900
    assert await redis.get(client) == "2"  # the client's reservation was given back
    assert (await store.admit_login(BOB, CLIENT, POLICY)).admitted
    refused = await store.admit_login("carol@example.com", CLIENT, POLICY)  # client limit (3)
    assert (refused.admitted, refused.scope) == (False, "client")
    assert not await redis.exists(ukeys.cluster_failures_key("carol@example.com", CLIENT))
    await store.login_succeeded(BOB, CLIENT, POLICY)
    assert await redis.get(client) == "2"
    assert not await redis.exists(ukeys.cluster_failures_key(BOB, CLIENT))
    assert await redis.smembers(ukeys.cluster_known_clients_key(BOB)) == {CLIENT}
    assert (await store.admit_login("carol@example.com", CLIENT, POLICY)).admitted


async def test_counters_use_a_fixed_window(store: ClusterUserStore, redis: RedisCluster) -> None:
    first = await store.count_registration("198.51.100.4", 900)
    second = await store.count_registration("198.51.100.4", 5)
    assert (first.count, second.count) == (1, 2)
    assert 899 <= second.ttl <= 900
    assert await redis.get("u:register_clients:{198.51.100.4}") == "2"


async def test_ping(store: ClusterUserStore) -> None:
    assert await store.ping()


# -- the wiring in cluster mode -------------------------------------------------------------------


async def test_wire_uses_the_cluster_layout_with_a_relay_per_bucket(
    keys: Path, security: Security, cluster_url: str, redis: RedisCluster
) -> None:
    """Deletions of accounts of many buckets each reach MessageService and NotificationService
    EraseAccount (stand-ins behind the real edge) through their bucket's relay."""
    message_port, notification_port = free_port(), free_port()
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_CLUSTER_NODES": cluster_url.removeprefix("redis+cluster://"),
        "MESSAGE_SERVICE_ADDR": f"127.0.0.1:{message_port}",
        "NOTIFICATION_SERVICE_ADDR": f"127.0.0.1:{notification_port}",
    }
    emails = EMAILS[:12]
    assert len({ukeys.bucket(email) for email in emails}) > 5
    async with (
        serve(keys, "message", message_port) as messages,
        serve(keys, "notification", notification_port) as notifications,
        contextlib.AsyncExitStack() as resources,
    ):
        start = Start("user-service", Settings.from_env(environ), security, resources)
        parts = wire(start)
        [client] = start.redis_clients
        assert isinstance(client, RedisCluster)
        assert parts.outbox is not None
        assert isinstance(parts.outbox.dead_letters, BucketDeadLetters)
        assert len(parts.outbox.dead_letters.buckets) == ukeys.BUCKETS
        relays = [relay.run for relay in parts.outbox.relays]
        assert not parts.background  # the shell runs every bucket's relay
        assert len(relays) == ukeys.BUCKETS
        tasks = [asyncio.create_task(relay()) for relay in relays]
        try:
            service = parts.service
            accounts = {}
            for email in emails:
                await service.register("U", email, ALICE_PASSWORD)
                assert await redis.exists(ukeys.cluster_user_key(email))
                state = await service.account(email)
                assert state is not None
                accounts[email] = state.account_id
            signed_in = await service.authenticate(emails[0], ALICE_PASSWORD, CLIENT)
            assert signed_in is not None
            for email in emails:
                await service.delete(Principal("user", email), email)
                assert not await service.exists(email)
            expected = sorted(("user", email, accounts[email]) for email in emails)
            for _ in range(200):
                if len(messages.erased) >= len(emails) and len(notifications.erased) >= len(emails):
                    break
                await asyncio.sleep(0.05)
            assert sorted(messages.erased) == expected
            assert sorted(notifications.erased) == expected
            for index in range(ukeys.BUCKETS):
                stream = ukeys.cluster_accounts_outbox(index)
                groups: Any = await redis.xinfo_groups(stream)
                assert [(g["name"], g["pending"]) for g in groups] == [("erasure-relay", 0)]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_operators_tool_on_the_cluster(
    make_service: MakeService, cluster_url: str, keys: Path
) -> None:
    service = make_service()
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    environ = {
        "REDIS_CLUSTER_NODES": cluster_url.removeprefix("redis+cluster://"),
        "KEYS_DIR": str(keys),
    }
    assert await set_role(environ, " Alice@Example.com ", "operator") == ALICE
    alice = Principal("user", ALICE)
    assert [u.email for u in (await service.list_users(None, None, alice))[0]] == [ALICE]


async def test_main_in_cluster_mode_serves_rest_and_grpc(
    keys: Path, cluster_url: str, redis: RedisCluster
) -> None:
    rest_port, grpc_port = free_port(), free_port()
    environ = {
        "KEYS_DIR": str(keys),
        "REDIS_CLUSTER_NODES": cluster_url.removeprefix("redis+cluster://"),
        "BIND_HOST": "127.0.0.1",
        "USER_REST_PORT": str(rest_port),
        "USER_GRPC_PORT": str(grpc_port),
        "SHUTDOWN_GRACE": "2",
        "LOG_LEVEL": "WARNING",
        "MESSAGE_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
        "NOTIFICATION_SERVICE_ADDR": f"127.0.0.1:{free_port()}",
    }
    stop = asyncio.Event()
    server = asyncio.create_task(main(environ, stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        await wait_for_status(channel, SERVING, "missive.user.v1.UserService", within=10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
            assert (await http.get("/health")).json() == {"status": "SERVING"}
            body = {"name": "Alice", "email": ALICE, "password": ALICE_PASSWORD}
            assert (await http.post("/users", json=body)).status_code == 201
            assert (await http.post("/users", json=body)).status_code == 409
            login = await http.post("/login", json={"email": ALICE, "password": ALICE_PASSWORD})
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert (await http.get(f"/users/{ALICE}", headers=auth)).json()["name"] == "Alice"
            assert (await http.delete(f"/users/{ALICE}", headers=auth)).status_code == 204
        reply = await user_pb2_grpc.UserServiceStub(channel).AuthenticateUser(
            user_pb2.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD), timeout=5
        )
        assert not reply.authenticated
        assert not await redis.exists(ukeys.cluster_user_key(ALICE))
        events: Any = await redis.xrange(ukeys.cluster_accounts_outbox(ukeys.bucket(ALICE)))
        assert [fields["email"] for _, fields in events] == [ALICE]
        stop.set()
        await asyncio.wait_for(server, 10)
    finally:
        stop.set()
        await channel.close()
        if not server.done():
            server.cancel()
        await asyncio.gather(server, return_exceptions=True)
