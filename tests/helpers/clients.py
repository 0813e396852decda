"""Thin test clients over the real transports: REST with httpx, gRPC with the generated stubs."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
from missive.frontend.v1 import frontend_pb2_grpc
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.notification.v1 import notification_pb2, notification_pb2_grpc
from missive.user.v1 import user_pb2_grpc

from tests.helpers.system import System

PASSWORD = "correct horse battery"


@dataclass
class User:
    email: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register_and_login(system: System, name: str, email: str | None = None) -> User:
    email = email or f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
        created = await http.post(
            "/users", json={"name": name, "email": email, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
        login = await http.post("/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return User(email, login.json()["access_token"])


@dataclass
class Stubs:
    """gRPC stubs of every service of one running system, sharing its channels."""

    channels: list[grpc.aio.Channel]
    user: user_pb2_grpc.UserServiceAsyncStub
    message: message_pb2_grpc.MessageServiceAsyncStub
    notification: notification_pb2_grpc.NotificationServiceAsyncStub
    frontend: frontend_pb2_grpc.FrontendServiceAsyncStub

    @classmethod
    def connect(cls, system: System) -> Stubs:
        channels = [
            grpc.aio.insecure_channel(system.grpc_addr(name))
            for name in ("user", "message", "notification", "frontend")
        ]
        return cls(
            channels,
            user_pb2_grpc.UserServiceStub(channels[0]),
            message_pb2_grpc.MessageServiceStub(channels[1]),
            notification_pb2_grpc.NotificationServiceStub(channels[2]),
            frontend_pb2_grpc.FrontendServiceStub(channels[3]),
        )

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()

    async def send(
        self, sender: User, receiver: User, content: str, request_id: str = ""
    ) -> message_pb2.Message:
        reply = await self.message.SendMessage(
            message_pb2.SendMessageRequest(
                sender_email=sender.email,
                receiver_email=receiver.email,
                content=content,
                client_request_id=request_id,
            ),
            metadata=sender.metadata,
            timeout=10,
        )
        return reply.message


async def next_notification(
    stream: grpc.aio.UnaryStreamCall[Any, notification_pb2.Notification], within: float = 10
) -> notification_pb2.Notification:
    """The next notification a SubscribeNotifications stream yields (TimeoutError if none)."""
    item = await asyncio.wait_for(stream.read(), timeout=within)
    assert isinstance(item, notification_pb2.Notification), f"the stream ended: {item!r}"
    return item
