"""Fixtures for FrontendService: keys, a NotificationService stand-in, the real gRPC server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import grpc.aio
import pytest
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.notification.v1 import notification_pb2, notification_pb2_grpc
from missive.user.v1 import user_pb2, user_pb2_grpc

from services.common.auth import KeyRing, UserTokenIssuer, ensure_keys
from services.common.bootstrap import Security, create_endpoint
from services.common.grpc_client import peer_channel
from services.common.grpc_edge import Context, EdgeInterceptor, caller
from services.common.grpc_server import bind_port, create_grpc_server
from services.common.ports import free_port
from services.frontend.grpc.app import register
from services.frontend.hub import Hub
from services.frontend.peers import NotificationReplay
from services.frontend.service import FrontendService
from tests.helpers.accounts import account_id_of

N = notification_pb2
BOB = "bob@example.com"
ADA = "ada@example.com"
BASE_TIME = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def notification(
    nid: int, receiver: str = BOB, *, read: bool = False, sender: str = ADA
) -> notification_pb2.Notification:
    """A stored notification; a larger id is a newer one."""
    message = N.Notification(
        id=str(nid), message_id=nid, sender_email=sender, receiver_email=receiver, read=read
    )
    message.timestamp.FromDatetime(BASE_TIME + timedelta(seconds=nid))
    return message


class NotificationStandIn(notification_pb2_grpc.NotificationServiceServicer):
    """A peer, not the code under test: ListNotifications over a list, newest first.

    Pages hold at most ``max_page`` items (the contract allows short pages), so a replay of a
    few notifications already spans several pages.
    """

    def __init__(self, max_page: int = 2) -> None:
        self.stored: list[notification_pb2.Notification] = []  # newest first
        self.max_page = max_page
        self.calls: list[tuple[str, notification_pb2.ListNotificationsRequest]] = []
        self.refuse_page_tokens = False

    async def ListNotifications(
        self, request: notification_pb2.ListNotificationsRequest, context: Context
    ) -> notification_pb2.ListNotificationsResponse:
        self.calls.append((caller().name, request))
        if self.refuse_page_tokens and request.page_token:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is malformed")
        mine = [n for n in self.stored if n.receiver_email == request.email]
        listed = [n for n in mine if not (request.unread_only and n.read)]
        offset = int(request.page_token or "0")
        end = offset + min(request.page_size or 50, self.max_page)
        return N.ListNotificationsResponse(
            notifications=listed[offset:end],
            next_page_token=str(end) if end < len(listed) else "",
            unread_count=sum(not n.read for n in mine),
        )

    async def CreateNotification(
        self, request: notification_pb2.CreateNotificationRequest, context: Context
    ) -> notification_pb2.CreateNotificationResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def CheckUserSubscribed(
        self, request: notification_pb2.CheckUserSubscribedRequest, context: Context
    ) -> notification_pb2.SubscriptionStatus:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def SubscribeUser(
        self, request: notification_pb2.SubscribeUserRequest, context: Context
    ) -> notification_pb2.SubscriptionStatus:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def UnsubscribeUser(
        self, request: notification_pb2.UnsubscribeUserRequest, context: Context
    ) -> notification_pb2.SubscriptionStatus:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def MarkNotificationRead(
        self, request: notification_pb2.MarkNotificationReadRequest, context: Context
    ) -> notification_pb2.Notification:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def MarkAllNotificationsRead(
        self, request: notification_pb2.MarkAllNotificationsReadRequest, context: Context
    ) -> notification_pb2.MarkAllNotificationsReadResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def ListDeadLetters(
        self, request: notification_pb2.ListDeadLettersRequest, context: Context
    ) -> notification_pb2.ListDeadLettersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def ReplayDeadLetters(
        self, request: notification_pb2.ReplayDeadLettersRequest, context: Context
    ) -> notification_pb2.ReplayDeadLettersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")

    async def DropDeadLetters(
        self, request: notification_pb2.DropDeadLettersRequest, context: Context
    ) -> notification_pb2.DropDeadLettersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the stand-in")


@dataclass
class Peer:
    """The running stand-in and its address."""

    servicer: NotificationStandIn
    address: str


@dataclass
class Frontend:
    """A running FrontendService and the clients tests call it with."""

    service: FrontendService
    port: int
    keys: Path
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _stub(self, channel: grpc.aio.Channel) -> frontend_pb2_grpc.FrontendServiceAsyncStub:
        self.channels.append(channel)
        return frontend_pb2_grpc.FrontendServiceStub(channel)

    def as_service(self, name: str) -> frontend_pb2_grpc.FrontendServiceAsyncStub:
        """A client presenting service ``name``'s credential."""
        credentials = Security.load(self.keys, name).credentials
        return self._stub(peer_channel(self.address, credentials, target="frontend"))

    def plain(self) -> frontend_pb2_grpc.FrontendServiceAsyncStub:
        """A client without credentials (pass user tokens as metadata)."""
        return self._stub(grpc.aio.insecure_channel(self.address))

    async def push(self, message: notification_pb2.Notification) -> int:
        """ReceiveNotification as NotificationService; delivered_to."""
        reply = await self.as_service("notification").ReceiveNotification(
            frontend_pb2.ReceiveNotificationRequest(notification=message), timeout=5
        )
        return reply.delivered_to

    def subscribe(
        self, email: str, token: str | None = None
    ) -> grpc.aio.UnaryStreamCall[
        frontend_pb2.SubscribeNotificationsRequest, notification_pb2.Notification
    ]:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        return self.plain().SubscribeNotifications(
            frontend_pb2.SubscribeNotificationsRequest(email=email), metadata=metadata
        )

    async def wait_streams(self, email: str, count: int, within: float = 5.0) -> None:
        """Until ``email`` has ``count`` registered streams."""
        deadline = time.monotonic() + within
        while self.service.hub.open_streams(email) != count:
            assert time.monotonic() < deadline, (
                f"{email} has {self.service.hub.open_streams(email)} streams, expected {count}"
            )
            await asyncio.sleep(0.01)


StartFrontend = Callable[..., AbstractAsyncContextManager[Frontend]]


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    ensure_keys(tmp_path)
    return tmp_path


@pytest.fixture
def token_for(keys: Path) -> Callable[[str], str]:
    issuer = UserTokenIssuer(KeyRing.load(keys, "user", sign_user_tokens=True), 900)
    return lambda email: issuer.issue(email, account_id_of(email), 1)[0]


class UserStandIn(user_pb2_grpc.UserServiceServicer):
    """A peer, not the code under test: every email is registered, each with the account
    tokens from ``token_for`` name, at ``versions[email]`` (1 unless changed)."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.deleted: set[str] = set()

    async def CheckUserExists(
        self, request: user_pb2.CheckUserExistsRequest, context: Context
    ) -> user_pb2.CheckUserExistsResponse:
        if request.email in self.deleted:
            return user_pb2.CheckUserExistsResponse(exists=False)
        return user_pb2.CheckUserExistsResponse(
            exists=True,
            account_id=account_id_of(request.email),
            token_version=self.versions.get(request.email, 1),
        )


@dataclass
class Users:
    servicer: UserStandIn
    address: str


@pytest.fixture
async def users(keys: Path) -> AsyncIterator[Users]:
    """The UserService stand-in behind the real edge, answering CheckUserExists."""
    server = create_grpc_server(
        interceptors=[EdgeInterceptor(Security.load(keys, "user").verifier)]
    )
    servicer = UserStandIn()  # type: ignore[abstract]
    user_pb2_grpc.add_UserServiceServicer_to_server(servicer, server)
    port = bind_port(server, "127.0.0.1", 0, "TEST_USER_PORT")
    await server.start()
    try:
        yield Users(servicer, f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


@pytest.fixture
async def peer(keys: Path) -> AsyncIterator[Peer]:
    """The NotificationService stand-in behind the real edge (so the frontend credential counts)."""
    server = create_grpc_server(
        interceptors=[EdgeInterceptor(Security.load(keys, "notification").verifier)]
    )
    servicer = NotificationStandIn()  # type: ignore[abstract]
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)
    port = bind_port(server, "127.0.0.1", 0, "TEST_NOTIFICATION_PORT")
    await server.start()
    try:
        yield Peer(servicer, f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


@pytest.fixture
def start_frontend(keys: Path) -> StartFrontend:
    """Start a real FrontendService gRPC server replaying from ``replay_addr``."""

    @asynccontextmanager
    async def start(replay_addr: str, hub: Hub | None = None) -> AsyncIterator[Frontend]:
        security = Security.load(keys, "frontend")
        replay_channel = peer_channel(replay_addr, security.credentials, target="notification")
        service = FrontendService(NotificationReplay(replay_channel, page_timeout=2.0), hub)
        endpoint = create_endpoint(
            security=security,
            host="127.0.0.1",
            port=0,
            port_env="FRONTEND_GRPC_PORT",
            register=lambda server: register(server, service),
        )
        await endpoint.server.start()
        frontend = Frontend(service, endpoint.port, keys)
        try:
            yield frontend
        finally:
            for channel in frontend.channels:
                await channel.close()
            await endpoint.server.stop(None)
            await replay_channel.close()

    return start


@pytest.fixture
async def frontend(start_frontend: StartFrontend, peer: Peer) -> AsyncIterator[Frontend]:
    async with start_frontend(peer.address) as running:
        yield running


@pytest.fixture
def dead_address() -> str:
    """An address nobody listens on."""
    return f"127.0.0.1:{free_port()}"
