"""Fixtures for NotificationService: keys, Valkey (DB 2), the real edges, a frontend stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.notification.v1 import notification_pb2, notification_pb2_grpc
from redis.asyncio import Redis

from services.common.auth import KeyRing, UserTokenIssuer, ensure_keys
from services.common.bootstrap import Security, create_endpoint
from services.common.domain import Principal
from services.common.grpc_client import peer_channel
from services.common.grpc_edge import Context, EdgeInterceptor, caller
from services.common.grpc_server import bind_port, create_grpc_server
from services.common.ports import free_port
from services.common.redis import create_redis
from services.notification.api_rest.app import create_rest_app
from services.notification.grpc.app import register
from services.notification.models import NewNotification
from services.notification.service import NotificationService
from services.notification.store import RedisNotificationStore

ADA = "ada@example.com"
BOB = "bob@example.com"
EVE = "eve@example.com"
BASE_TIME = datetime(2025, 1, 14, 12, 0, 0, tzinfo=UTC)
MESSAGE_SERVICE = Principal("service", "message")
FRONTEND_SERVICE = Principal("service", "frontend")
NOTIFICATION_DB = 2


async def stream_fields(redis: Redis, stream: str) -> list[dict[str, str]]:
    """The fields of every entry of ``stream``, oldest first."""
    entries: Any = await redis.xrange(stream)
    return [dict(fields) for _, fields in entries]


def user(email: str) -> Principal:
    return Principal("user", email)


def when(message_id: int) -> datetime:
    """The time message ``message_id`` was stored: later for a larger id."""
    return BASE_TIME + timedelta(seconds=message_id % 1_000_000)


def new(message_id: int, receiver: str = BOB, sender: str = ADA) -> NewNotification:
    """A validated creation request; a larger message id is a later message."""
    return NewNotification(message_id, sender, receiver, when(message_id), False)


def create_request(
    message_id: int, receiver: str = BOB, sender: str = ADA
) -> notification_pb2.CreateNotificationRequest:
    request = notification_pb2.CreateNotificationRequest(
        message_id=message_id, sender_email=sender, receiver_email=receiver
    )
    request.timestamp.FromDatetime(when(message_id))
    return request


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    ensure_keys(tmp_path)
    return tmp_path


@pytest.fixture
def token_for(keys: Path) -> Callable[[str], str]:
    issuer = UserTokenIssuer(KeyRing.load(keys, "user", sign_user_tokens=True), 900)
    return lambda email: issuer.issue(email)[0]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url, NOTIFICATION_DB)
    yield client
    await client.aclose()


@pytest.fixture
def store(redis: Redis) -> RedisNotificationStore:
    return RedisNotificationStore(redis, retention=1000)


@pytest.fixture
def service(store: RedisNotificationStore) -> NotificationService:
    return NotificationService(store)


@dataclass
class Server:
    """A running NotificationService gRPC server and clients that call it as someone."""

    address: str
    keys: Path
    token_for: Callable[[str], str]
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def as_service(self, name: str) -> notification_pb2_grpc.NotificationServiceAsyncStub:
        """A client presenting service ``name``'s credential."""
        credentials = Security.load(self.keys, name).credentials
        channel = peer_channel(self.address, credentials, target="notification")
        self.channels.append(channel)
        return notification_pb2_grpc.NotificationServiceStub(channel)

    def plain(self) -> notification_pb2_grpc.NotificationServiceAsyncStub:
        """A client without credentials; pass :meth:`user` as metadata."""
        channel = grpc.aio.insecure_channel(self.address)
        self.channels.append(channel)
        return notification_pb2_grpc.NotificationServiceStub(channel)

    def user(self, email: str) -> tuple[tuple[str, str], ...]:
        """The metadata of a call made by ``email``."""
        return (("authorization", f"Bearer {self.token_for(email)}"),)


@pytest.fixture
async def server(
    keys: Path, token_for: Callable[[str], str], service: NotificationService
) -> AsyncIterator[Server]:
    endpoint = create_endpoint(
        security=Security.load(keys, "notification"),
        host="127.0.0.1",
        port=0,
        port_env="NOTIFICATION_GRPC_PORT",
        register=lambda grpc_server: register(grpc_server, service),
    )
    await endpoint.server.start()
    running = Server(f"127.0.0.1:{endpoint.port}", keys, token_for)
    try:
        yield running
    finally:
        for channel in running.channels:
            await channel.close()
        await endpoint.server.stop(None)


@pytest.fixture
async def http(
    keys: Path, service: NotificationService, store: RedisNotificationStore
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the real Connexion app (in process, over ASGI)."""
    app = create_rest_app(service, Security.load(keys, "notification").verifier, store.ping)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notification") as client:
        yield client


class FrontendStandIn(frontend_pb2_grpc.FrontendServiceServicer):
    """A peer, not the code under test: records pushes; can fail or stall the first calls."""

    def __init__(self) -> None:
        self.received: list[tuple[str, notification_pb2.Notification]] = []
        self.failures: list[grpc.StatusCode] = []
        self.stall_seconds = 0.0
        self.calls = 0

    async def ReceiveNotification(
        self, request: frontend_pb2.ReceiveNotificationRequest, context: Context
    ) -> frontend_pb2.ReceiveNotificationResponse:
        self.calls += 1
        if self.stall_seconds:
            stall, self.stall_seconds = self.stall_seconds, 0.0
            await asyncio.sleep(stall)
            return frontend_pb2.ReceiveNotificationResponse()  # the caller gave up by now
        if self.failures:
            await context.abort(self.failures.pop(0), "stand-in failure")
        self.received.append((caller().name, request.notification))
        return frontend_pb2.ReceiveNotificationResponse(delivered_to=1)

    async def SubscribeNotifications(
        self, request: frontend_pb2.SubscribeNotificationsRequest, context: Context
    ) -> AsyncIterator[notification_pb2.Notification]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")
        yield notification_pb2.Notification()  # pragma: no cover


StartFrontend = Callable[[int], AbstractAsyncContextManager[FrontendStandIn]]


@pytest.fixture
def start_frontend(keys: Path) -> StartFrontend:
    """Serve the stand-in on ``port`` behind the real edge (the notification credential counts)."""

    @asynccontextmanager
    async def start(port: int) -> AsyncIterator[FrontendStandIn]:
        server = create_grpc_server(
            interceptors=[EdgeInterceptor(Security.load(keys, "frontend").verifier)]
        )
        servicer = FrontendStandIn()  # type: ignore[abstract]  # batches get UNIMPLEMENTED
        frontend_pb2_grpc.add_FrontendServiceServicer_to_server(servicer, server)
        bind_port(server, "127.0.0.1", port, "FRONTEND_GRPC_PORT")
        await server.start()
        try:
            yield servicer
        finally:
            await server.stop(None)

    return start


@pytest.fixture
def frontend_port() -> int:
    return free_port()
