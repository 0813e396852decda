"""A send's user checks against the real UserService: one CheckUsersExist call at most, none
when the account cache is warm, and a deleted user refused within the documented bound.

Both services run for real on loopback (UserService over Valkey DB 0 behind its edge,
MessageService over DB 1 with the account cache of services.common.sessions); the calls are
counted by a server interceptor on UserService.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from missive.message.v1 import message_pb2, message_pb2_grpc
from redis.asyncio import Redis

from services.common.auth import KeyRing, UserTokenIssuer
from services.common.bootstrap import Security, create_endpoint
from services.common.domain import Principal
from services.common.grpc_edge import EdgeInterceptor
from services.common.grpc_server import bind_port, create_grpc_server
from services.common.redis import create_redis
from services.common.sessions import (
    REVOCATION_CHANNEL,
    Sessions,
    follow_revocations,
    publish_revocation,
)
from services.message.grpc.app import register as register_message
from services.message.peers import GrpcUserDirectory
from services.message.service import MessageService
from services.message.store import RedisMessageStore
from services.user.grpc.app import register as register_user
from services.user.passwords import Passwords
from services.user.service import UserService
from services.user.settings import HashParams
from services.user.store import RedisUserStore
from tests.unit.message.conftest import (
    ADA,
    BOB,
    CAROL,
    NOBODY,
    StartServer,
    UserServiceRunning,
    user_channel,
)

PASSWORD = "correct-horse-battery"
Handler = Any


class CallCounter(grpc.aio.ServerInterceptor):
    """Remembers the method of every UserService call the server receives."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        service, _, method = handler_call_details.method.rpartition("/")
        if service.endswith("UserService"):
            self.calls.append(method)
        return await continuation(handler_call_details)


@dataclass
class Pair:
    """The real UserService and MessageService, wired as in production."""

    users: UserService
    counter: CallCounter
    sessions: Sessions
    messages: message_pb2_grpc.MessageServiceAsyncStub
    issuer: UserTokenIssuer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def register(self, *emails: str) -> None:
        for email in emails:
            await self.users.register(email.split("@")[0].title(), email, PASSWORD)

    async def token(self, email: str) -> str:
        account = await self.users.account(email)
        assert account is not None
        return self.issuer.issue(email, account.account_id, account.token_version)[0]

    async def send(self, sender: str, receiver: str, content: str = "hi") -> message_pb2.Message:
        reply = await self.messages.SendMessage(
            message_pb2.SendMessageRequest(
                sender_email=sender, receiver_email=receiver, content=content
            ),
            metadata=(("authorization", f"Bearer {await self.token(sender)}"),),
            timeout=5,
        )
        return reply.message

    async def refused(self, sender: str, receiver: str) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await self.send(sender, receiver)
        return raised.value

    async def delete(self, email: str) -> None:
        account = await self.users.account(email)
        assert account is not None
        await self.users.delete(Principal("user", email, account_id=account.account_id), email)


async def _subscribed(redis: Redis) -> None:
    """Return once a client follows the revocation channel."""
    for _ in range(500):
        if (await redis.pubsub_numsub(REVOCATION_CHANNEL))[0][1] >= 1:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("nobody follows the revocation channel")


StartPair = Callable[..., AbstractAsyncContextManager[Pair]]


@pytest.fixture
def start_pair(keys: Path, redis_url: str, store: RedisMessageStore) -> StartPair:
    @asynccontextmanager
    async def start(*, ttl: float = 5.0, follow: bool = True) -> AsyncIterator[Pair]:
        user_redis = create_redis(redis_url, 0)
        message_redis = create_redis(redis_url, 1)
        ring = KeyRing.load(keys, "user", sign_user_tokens=True)
        issuer = UserTokenIssuer(ring, 900)

        async def revoked(email: str) -> None:
            await publish_revocation(user_redis, email)

        users = UserService(
            RedisUserStore(user_redis), Passwords(HashParams(), 2), issuer, revoked=revoked
        )
        counter = CallCounter()
        user_server = create_grpc_server(
            interceptors=[
                counter,
                EdgeInterceptor(Security.load(keys, "user", sign_user_tokens=True).verifier),
            ]
        )
        register_user(user_server, users)
        user_port = bind_port(user_server, "127.0.0.1", 0, "USER_GRPC_PORT")
        await user_server.start()
        channel = user_channel(keys, f"127.0.0.1:{user_port}")
        directory = GrpcUserDirectory(channel)
        sessions = Sessions(directory, ttl_seconds=ttl)
        service = MessageService(store, directory, known_users=sessions)
        endpoint = create_endpoint(
            security=Security.load(keys, "message"),
            host="127.0.0.1",
            port=0,
            port_env="MESSAGE_GRPC_PORT",
            register=lambda server: register_message(server, service),
            sessions=sessions,
        )
        await endpoint.server.start()
        client = grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}")
        pair = Pair(users, counter, sessions, message_pb2_grpc.MessageServiceStub(client), issuer)
        if follow:
            pair.tasks.append(asyncio.create_task(follow_revocations(message_redis, sessions)))
            await _subscribed(user_redis)
        try:
            yield pair
        finally:
            for task in pair.tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            await client.close()
            await channel.close()
            await endpoint.server.stop(None)
            await user_server.stop(None)
            await message_redis.aclose()
            await user_redis.aclose()

    return start


async def test_a_send_asks_user_service_once_when_cold_and_never_when_warm(
    start_pair: StartPair,
) -> None:
    async with start_pair() as pair:
        await pair.register(ADA, BOB, CAROL)
        await pair.send(ADA, BOB)
        # Cold: the token's account (the edge), then the receiver (the sender is cached now).
        assert pair.counter.calls == ["CheckUserExists", "CheckUsersExist"]
        for _ in range(5):
            await pair.send(ADA, BOB)
        assert len(pair.counter.calls) == 2  # warm: no call at all
        await pair.send(BOB, ADA)  # Bob's token and both users: every one cached
        assert len(pair.counter.calls) == 2
        await pair.send(ADA, CAROL)  # one new receiver: one call
        assert pair.counter.calls[2:] == ["CheckUsersExist"]


async def test_a_receiver_that_does_not_exist_is_asked_about_each_time(
    start_pair: StartPair,
) -> None:
    async with start_pair() as pair:
        await pair.register(ADA)
        for _ in range(2):
            error = await pair.refused(ADA, NOBODY)
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert error.details() == f"receiver_email: no user is registered under {NOBODY}"
        assert pair.counter.calls.count("CheckUsersExist") == 2  # never cached
        await pair.register(NOBODY)
        await pair.send(ADA, NOBODY)  # found at once after registering


async def test_a_deleted_receiver_is_refused_as_soon_as_its_deletion_is_published(
    start_pair: StartPair,
) -> None:
    async with start_pair() as pair:
        await pair.register(ADA, BOB)
        await pair.send(ADA, BOB)
        await pair.delete(BOB)
        deadline = time.monotonic() + 1.0  # pub/sub is asynchronous, but fast
        while True:
            with suppress(grpc.aio.AioRpcError):
                await pair.send(ADA, BOB, "still there?")
                assert time.monotonic() < deadline, "a deleted receiver was still accepted"
                continue
            break
        error = await pair.refused(ADA, BOB)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"receiver_email: no user is registered under {BOB}"
        assert pair.counter.calls[-1] == "CheckUsersExist"  # asked again, not cached


async def test_without_the_revocation_channel_a_deleted_receiver_is_refused_within_the_ttl(
    start_pair: StartPair,
) -> None:
    ttl = 1.0
    async with start_pair(ttl=ttl, follow=False) as pair:
        await pair.register(ADA, BOB)
        await pair.send(ADA, BOB)
        deleted = time.monotonic()
        await pair.delete(BOB)
        # The documented staleness: within the ttl, the cached account may still be trusted.
        await pair.send(ADA, BOB, "just after the deletion")
        assert time.monotonic() - deleted < ttl
        await asyncio.sleep(ttl - (time.monotonic() - deleted) + 0.05)
        error = await pair.refused(ADA, BOB)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"receiver_email: no user is registered under {BOB}"


async def test_an_older_user_service_is_asked_one_email_at_a_time(
    start_server: StartServer, user_service: UserServiceRunning
) -> None:
    user_service.servicer.batch = False  # CheckUsersExist answers UNIMPLEMENTED
    async with start_server(user_service.address) as server:
        sent = await server.send(ADA, BOB, "Hello Bob")
        assert sent.receiver_email == BOB
        assert user_service.servicer.callers == ["message", "message"]
        await server.send(BOB, ADA, "Hello Ada")  # no second try of CheckUsersExist
        assert user_service.servicer.callers == ["message"] * 4
