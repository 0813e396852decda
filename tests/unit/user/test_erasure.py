"""The `outbox:accounts` relay on the shared delivery engine: each deletion reaches
MessageService and NotificationService `EraseAccount` (real gRPC behind the real edge, with
UserService's credential); transient failures are retried until they succeed, refusals are
dead-lettered at once, erasures of one email stay in order."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import empty_pb2
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.notification.v1 import notification_pb2, notification_pb2_grpc
from redis.asyncio import Redis

from services.common.bootstrap import Security
from services.common.delivery import DEAD_LETTER_OUTCOME_FIELD, Relay
from services.common.grpc_client import peer_channel
from services.common.grpc_edge import Context, EdgeInterceptor, caller
from services.common.grpc_server import bind_port, create_grpc_server
from services.common.ports import free_port
from services.user.keys import ACCOUNTS_DEAD_LETTERS
from services.user.models import StoredUser
from services.user.relay import OUTBOX, EraseAccount, lane_key
from services.user.store import RedisUserStore
from tests.unit.user.conftest import ALICE, BOB

FAST = dataclasses.replace(OUTBOX, backoff_initial=0.01, backoff_max=0.05, block_ms=100)
OLD = "0000000000000001" + "a" * 16
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Erasures:
    """Stand-in peers (not the code under test): record EraseAccount, fail the first calls."""

    def __init__(self) -> None:
        self.failures: list[grpc.StatusCode] = []
        self.erased: list[tuple[str, str, str]] = []  # (caller, email, account_id)

    async def erase(self, request: Any, context: Context) -> None:
        if self.failures:
            await context.abort(self.failures.pop(0), "stand-in failure")
        self.erased.append((caller().name, request.email, request.account_id))


class MessageErasures(Erasures, message_pb2_grpc.MessageServiceServicer):
    async def EraseAccount(
        self, request: message_pb2.EraseAccountRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.erase(request, context)
        return empty_pb2.Empty()


class NotificationErasures(Erasures, notification_pb2_grpc.NotificationServiceServicer):
    async def EraseAccount(
        self, request: notification_pb2.EraseAccountRequest, context: Context
    ) -> notification_pb2.EraseAccountResponse:
        await self.erase(request, context)
        return notification_pb2.EraseAccountResponse(erased=1)


@asynccontextmanager
async def serve(keys: Path, service: str, port: int) -> AsyncIterator[Erasures]:
    server = create_grpc_server(
        interceptors=[EdgeInterceptor(Security.load(keys, service).verifier)]
    )
    servicer: Erasures
    if service == "message":
        servicer = MessageErasures()  # type: ignore[abstract]  # only EraseAccount
        message_pb2_grpc.add_MessageServiceServicer_to_server(servicer, server)
    else:
        servicer = NotificationErasures()  # type: ignore[abstract]  # only EraseAccount
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)
    bind_port(server, "127.0.0.1", port, "TEST_PORT")
    await server.start()
    try:
        yield servicer
    finally:
        await server.stop(None)


@pytest.fixture
async def relay_parts(keys: Path) -> AsyncIterator[tuple[EraseAccount, int, int]]:
    ports = free_port(), free_port()
    credentials = Security.load(keys, "user").credentials
    channels = [
        peer_channel(f"127.0.0.1:{port}", credentials, target=name)
        for port, name in zip(ports, ("message", "notification"), strict=True)
    ]
    yield EraseAccount(channels[0], channels[1], timeout=2.0), ports[0], ports[1]
    for channel in channels:
        await channel.close()


async def delete(redis: Redis, email: str, account_id: str) -> None:
    store = RedisUserStore(redis)
    user = StoredUser("N", email, "hash", NOW, NOW, account_id=account_id)
    assert await store.create(user)
    stored = await store.get(email)
    assert stored is not None and await store.delete(replace(stored))


async def test_a_deletion_is_erased_in_both_services_through_transient_failures(
    redis: Redis, keys: Path, relay_parts: tuple[EraseAccount, int, int]
) -> None:
    handler, message_port, notification_port = relay_parts
    await delete(redis, ALICE, OLD)
    relay = Relay(redis, FAST, "test-relay", handler, lane_key=lane_key)
    async with (
        serve(keys, "message", message_port) as messages,
        serve(keys, "notification", notification_port) as notifications,
    ):
        messages.failures = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
        notifications.failures = [grpc.StatusCode.UNAVAILABLE]
        delivered = 0
        for _ in range(200):
            delivered += await relay.drain_once()
            if delivered:
                break
    assert delivered == 1
    # A retry after NotificationService failed calls MessageService again: it is idempotent.
    assert set(messages.erased) == {("user", ALICE, OLD)} and len(messages.erased) == 2
    assert notifications.erased == [("user", ALICE, OLD)]
    assert relay.stats()["dead_lettered"] == 0 and relay.stats()["retried"] >= 2


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT]
)
async def test_a_refused_erasure_is_dead_lettered_at_once(
    redis: Redis, keys: Path, relay_parts: tuple[EraseAccount, int, int], code: grpc.StatusCode
) -> None:
    handler, message_port, notification_port = relay_parts
    await delete(redis, ALICE, OLD)
    relay = Relay(redis, FAST, "test-relay", handler, lane_key=lane_key)
    async with (
        serve(keys, "message", message_port) as messages,
        serve(keys, "notification", notification_port) as notifications,
    ):
        messages.failures = [code]
        assert await relay.drain_once() == 1
    assert messages.erased == [] and notifications.erased == []
    dead: Any = await redis.xrange(ACCOUNTS_DEAD_LETTERS)
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["email"] == ALICE and fields[DEAD_LETTER_OUTCOME_FIELD] == "permanent"


def test_erasures_are_ordered_per_email() -> None:
    assert lane_key({"email": ALICE, "account_id": OLD}) == ALICE
    assert lane_key({"email": BOB}) != lane_key({"email": ALICE})
