"""Fixtures for MessageService: keys, Valkey (DB 1), the real edges, UserService and
NotificationService stand-ins (peers, not the code under test) behind the real gRPC edge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.notification.v1 import notification_pb2, notification_pb2_grpc
from missive.user.v1 import user_pb2, user_pb2_grpc
from redis.asyncio import Redis

from services.common.auth import KeyRing, UserTokenIssuer, ensure_keys
from services.common.bootstrap import Security, create_endpoint
from services.common.domain import Principal, Unavailable
from services.common.grpc_client import peer_channel
from services.common.grpc_edge import Context, EdgeInterceptor, caller
from services.common.grpc_server import bind_port, create_grpc_server
from services.common.ports import free_port
from services.common.redis import create_redis
from services.common.sessions import AccountState
from services.message.api_rest.app import create_rest_app
from services.message.grpc.app import register
from services.message.models import Message
from services.message.peers import RETRY_METHODS, USER_SERVICE_NAME, GrpcUserDirectory
from services.message.service import MessageService
from services.message.store import RedisMessageStore
from tests.helpers.accounts import account_id_of

ADA = "ada@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
EVE = "eve@example.com"  # registered, but never part of the conversations under test
NOBODY = "nobody@example.com"  # not registered
REGISTERED = frozenset({ADA, BOB, CAROL, EVE})
MESSAGE_DB = 1


def user(email: str) -> Principal:
    return Principal("user", email)


async def dbsize(redis: Redis) -> int:
    return int(await redis.dbsize())


async def db_keys(redis: Redis) -> set[str]:
    """Every key of DB 1 (tests only; the service never lists keys)."""
    return {str(k) for k in await redis.keys("*")}


async def stream_fields(redis: Redis, stream: str) -> list[dict[str, str]]:
    """The fields of every entry of ``stream``, oldest first."""
    entries: Any = await redis.xrange(stream)
    return [dict(fields) for _, fields in entries]


async def store_messages(store: RedisMessageStore, *messages: Message) -> None:
    """Send each of ``messages`` through the store's send script, in order; each must get the id
    it names (the next of the id counter) and be stored."""
    for message in messages:
        outcome = await store.send_message(
            message.sender_email, message.receiver_email, message.content, message.timestamp
        )
        assert outcome.message is not None, outcome
        assert outcome.message.id == message.id, (outcome.message.id, message.id)


def display_name(email: str) -> str:
    """The display name the stand-ins give a registered user: "Ada" for ada@example.com."""
    return email.split("@")[0].title()


class KnownUsers:
    """The UserDirectory of the domain tests: a fixed set of emails, or down."""

    def __init__(self, emails: Iterable[str] = REGISTERED) -> None:
        self.emails = set(emails)
        self.down = False
        self.asked: list[str] = []

    async def account(self, email: str) -> AccountState | None:
        self.asked.append(email)
        if self.down:
            raise Unavailable("UserService is temporarily unavailable; the message was not stored")
        if email not in self.emails:
            return None
        return AccountState(account_id_of(email), 1, display_name(email))

    async def accounts(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        return {email: await self.account(email) for email in emails}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    ensure_keys(tmp_path)
    return tmp_path


@pytest.fixture
def token_for(keys: Path) -> Callable[[str], str]:
    issuer = UserTokenIssuer(KeyRing.load(keys, "user", sign_user_tokens=True), 900)
    return lambda email: issuer.issue(email, account_id_of(email), 1)[0]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, MESSAGE_DB)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> RedisMessageStore:
    return RedisMessageStore(redis)


@pytest.fixture
def known_users() -> KnownUsers:
    return KnownUsers()


@pytest.fixture
def service(store: RedisMessageStore, known_users: KnownUsers) -> MessageService:
    """The domain service over the real store and an in-memory user directory."""
    return MessageService(store, known_users)


class UserStandIn(user_pb2_grpc.UserServiceServicer):
    """A peer, not the code under test: CheckUserExists and CheckUsersExist over a set of
    emails; can stall, or answer CheckUsersExist UNIMPLEMENTED as an older UserService."""

    def __init__(self, emails: Iterable[str]) -> None:
        self.emails = set(emails)
        self.callers: list[str] = []
        self.stall_seconds = 0.0
        self.batch = True

    def _existence(self, email: str) -> user_pb2.UserExistence:
        if email not in self.emails:
            return user_pb2.UserExistence(email=email, exists=False)
        return user_pb2.UserExistence(
            email=email,
            exists=True,
            account_id=account_id_of(email),
            token_version=1,
            name=display_name(email),
        )

    async def CheckUserExists(
        self, request: user_pb2.CheckUserExistsRequest, context: Context
    ) -> user_pb2.CheckUserExistsResponse:
        self.callers.append(caller().name)
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        found = self._existence(request.email)
        return user_pb2.CheckUserExistsResponse(
            exists=found.exists,
            account_id=found.account_id,
            token_version=found.token_version,
            name=found.name,
        )

    async def CheckUsersExist(
        self, request: user_pb2.CheckUsersExistRequest, context: Context
    ) -> user_pb2.CheckUsersExistResponse:
        if not self.batch:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        self.callers.append(caller().name)
        if self.stall_seconds:
            await asyncio.sleep(self.stall_seconds)
        return user_pb2.CheckUsersExistResponse(
            users=[self._existence(email) for email in request.emails]
        )


@dataclass
class UserServiceRunning:
    address: str
    servicer: UserStandIn


@pytest.fixture
async def user_service(keys: Path) -> AsyncIterator[UserServiceRunning]:
    """The UserService stand-in on a free port, behind the real edge (allowlist included)."""
    server = create_grpc_server(
        interceptors=[EdgeInterceptor(Security.load(keys, "user").verifier)]
    )
    # The other methods keep the generated base's UNIMPLEMENTED answer.
    servicer = UserStandIn(REGISTERED)  # type: ignore[abstract]
    user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    port = bind_port(server, "127.0.0.1", 0, "USER_GRPC_PORT")
    await server.start()
    try:
        yield UserServiceRunning(f"127.0.0.1:{port}", servicer)
    finally:
        await server.stop(None)


def user_channel(keys: Path, address: str) -> grpc.aio.Channel:
    """The channel MessageService uses to reach UserService (as in __main__)."""
    return peer_channel(
        address,
        Security.load(keys, "message").credentials,
        target="user",
        retry_service=USER_SERVICE_NAME,
        retry_methods=RETRY_METHODS,
    )


@dataclass
class Server:
    """A running MessageService gRPC server and a client that calls it as anyone."""

    address: str
    stub: message_pb2_grpc.MessageServiceAsyncStub
    token_for: Callable[[str], str]
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def as_user(self, email: str) -> tuple[tuple[str, str], ...]:
        """The metadata of a call made by ``email``."""
        return (("authorization", f"Bearer {self.token_for(email)}"),)

    async def send(
        self, sender: str, receiver: str, content: str, request_id: str = ""
    ) -> message_pb2.Message:
        reply = await self.stub.SendMessage(
            message_pb2.SendMessageRequest(
                sender_email=sender,
                receiver_email=receiver,
                content=content,
                client_request_id=request_id,
            ),
            metadata=self.as_user(sender),
            timeout=5,
        )
        return reply.message


StartServer = Callable[[str], AbstractAsyncContextManager[Server]]


@pytest.fixture
def start_server(
    keys: Path, token_for: Callable[[str], str], store: RedisMessageStore
) -> StartServer:
    """Serve MessageService on port 0, checking users with the UserService at ``address``."""

    @asynccontextmanager
    async def start(address: str) -> AsyncIterator[Server]:
        channel = user_channel(keys, address)
        service = MessageService(store, GrpcUserDirectory(channel))
        endpoint = create_endpoint(
            security=Security.load(keys, "message"),
            host="127.0.0.1",
            port=0,
            port_env="MESSAGE_GRPC_PORT",
            register=lambda grpc_server: register(grpc_server, service),
        )
        await endpoint.server.start()
        client = grpc.aio.insecure_channel(f"127.0.0.1:{endpoint.port}")
        running = Server(
            f"127.0.0.1:{endpoint.port}",
            message_pb2_grpc.MessageServiceStub(client),
            token_for,
            [client, channel],
        )
        try:
            yield running
        finally:
            for open_channel in running.channels:
                await open_channel.close()
            await endpoint.server.stop(None)

    return start


@pytest.fixture
async def server(
    start_server: StartServer, user_service: UserServiceRunning
) -> AsyncIterator[Server]:
    async with start_server(user_service.address) as running:
        yield running


@dataclass
class Rest:
    """An HTTP client of the real Connexion app and the headers of each user."""

    client: httpx.AsyncClient
    token_for: Callable[[str], str]

    def auth(self, email: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_for(email)}"}

    async def send(self, sender: str, receiver: str, content: str, **extra: str) -> httpx.Response:
        body = {"sender_email": sender, "receiver_email": receiver, "content": content, **extra}
        return await self.client.post("/messages", json=body, headers=self.auth(sender))


@pytest.fixture
async def rest(
    keys: Path,
    token_for: Callable[[str], str],
    store: RedisMessageStore,
    user_service: UserServiceRunning,
) -> AsyncIterator[Rest]:
    """The real REST app (in process, over ASGI) checking users with the UserService stand-in."""
    channel = user_channel(keys, user_service.address)
    service = MessageService(store, GrpcUserDirectory(channel))
    app = create_rest_app(service, Security.load(keys, "message").verifier, store.ping)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://message") as client:
            yield Rest(client, token_for)
    finally:
        await channel.close()


class NotificationStandIn(notification_pb2_grpc.NotificationServiceServicer):
    """A peer, not the code under test: records CreateNotification; can fail the first calls."""

    def __init__(self) -> None:
        self.received: list[tuple[str, notification_pb2.CreateNotificationRequest]] = []
        self.failures: list[grpc.StatusCode] = []
        self.calls = 0
        self.batches = 0

    async def CreateNotification(
        self, request: notification_pb2.CreateNotificationRequest, context: Context
    ) -> notification_pb2.CreateNotificationResponse:
        self.calls += 1
        if self.failures:
            await context.abort(self.failures.pop(0), "stand-in failure")
        created = all(r.message_id != request.message_id for _, r in self.received)
        self.received.append((caller().name, request))
        return notification_pb2.CreateNotificationResponse(created=created, subscribed=True)


class BatchingNotificationStandIn(NotificationStandIn):
    """The stand-in with CreateNotifications too: each item recorded like one CreateNotification."""

    async def CreateNotifications(
        self, request: notification_pb2.CreateNotificationsRequest, context: Context
    ) -> notification_pb2.CreateNotificationsResponse:
        self.batches += 1
        reply = notification_pb2.CreateNotificationsResponse()
        for item in request.items:
            self.received.append((caller().name, item))
            reply.results.add().response.subscribed = True
        return reply


StartNotification = Callable[..., AbstractAsyncContextManager[NotificationStandIn]]


@pytest.fixture
def start_notification(keys: Path) -> StartNotification:
    """Serve the stand-in on ``port`` behind the real edge (only `message` may create)."""

    @asynccontextmanager
    async def start(port: int, *, batches: bool = False) -> AsyncIterator[NotificationStandIn]:
        server = create_grpc_server(
            interceptors=[EdgeInterceptor(Security.load(keys, "notification").verifier)]
        )
        # Only CreateNotification(s): the other methods answer UNIMPLEMENTED.
        servicer: NotificationStandIn = (
            BatchingNotificationStandIn()  # type: ignore[abstract]
            if batches
            else NotificationStandIn()  # type: ignore[abstract]
        )
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)
        bind_port(server, "127.0.0.1", port, "NOTIFICATION_GRPC_PORT")
        await server.start()
        try:
            yield servicer
        finally:
            await server.stop(None)

    return start


@pytest.fixture
def notification_port() -> int:
    return free_port()
