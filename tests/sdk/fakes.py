"""A scripted stand-in for UserService and MessageService on a real gRPC server (port 0).

Unit tests use it to provoke what the real system does only under faults (an UNAVAILABLE
reply followed by success, a token refused mid-session), and to see exactly what the SDK sent.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.user.v1 import user_pb2, user_pb2_grpc


def fake_jwt(email: str, ttl: float, serial: int) -> str:
    """An unsigned token shaped like the real ones (the SDK reads `sub` and `exp` only)."""

    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()

    claims = {"sub": email, "exp": int(time.time() + ttl), "jti": serial}
    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


@dataclass
class Recorded:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class FakeBackend(message_pb2_grpc.MessageServiceServicer, user_pb2_grpc.UserServiceServicer):
    """Scripted replies: ``fail`` holds status codes the next calls abort with, in order.

    The RPCs the tests do not need answer UNIMPLEMENTED.
    """

    token_ttl: float = 900.0
    fail: list[grpc.StatusCode] = field(default_factory=list)
    refused_tokens: set[str] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)
    calls: list[Recorded] = field(default_factory=list)
    logins: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> dict[str, str]:
        metadata = {
            key: value for key, value in context.invocation_metadata() if isinstance(value, str)
        }
        with self.lock:
            self.calls.append(Recorded(method, request, metadata))
            code = self.fail.pop(0) if self.fail else None
        if code is not None:
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                context.set_trailing_metadata((("retry-after", "7"),))
            context.abort(code, f"scripted {code.name}")
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        if token and token in self.refused_tokens:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the access token has expired")
        return metadata

    def calls_to(self, method: str) -> list[Recorded]:
        return [call for call in self.calls if call.method == method]

    def AuthenticateUser(self, request: Any, context: Any) -> Any:
        self._enter("AuthenticateUser", request, context)
        if request.password != "correct horse":
            return user_pb2.AuthenticateUserResponse(authenticated=False)
        with self.lock:
            self.logins += 1
            serial = self.logins
        expires = Timestamp()
        expires.FromSeconds(int(time.time() + self.token_ttl))
        return user_pb2.AuthenticateUserResponse(
            authenticated=True,
            access_token=fake_jwt(request.email, self.token_ttl, serial),
            token_type="Bearer",
            expires_at=expires,
        )

    def GetUser(self, request: Any, context: Any) -> Any:
        self._enter("GetUser", request, context)
        now = Timestamp()
        now.GetCurrentTime()
        return user_pb2.User(name="Fake", email=request.email, created_at=now, updated_at=now)

    def SendMessage(self, request: Any, context: Any) -> Any:
        self._enter("SendMessage", request, context)
        return message_pb2.SendMessageResponse(message=self._message(1, request.content))

    def DeleteMessage(self, request: Any, context: Any) -> Any:
        self._enter("DeleteMessage", request, context)
        from google.protobuf.empty_pb2 import Empty

        return Empty()

    def GetMessages(self, request: Any, context: Any) -> Any:
        """Pages over ``messages``; the page token is the next index (an opaque string)."""
        self._enter("GetMessages", request, context)
        start = int(request.page_token or "0")
        size = request.page_size or 50
        chunk = self.messages[start : start + size]
        following = start + size
        token = str(following) if following < len(self.messages) else ""
        return message_pb2.GetMessagesResponse(
            messages=[self._message(start + i + 1, text) for i, text in enumerate(chunk)],
            next_page_token=token,
        )

    def _unimplemented(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    CheckUserExists = ListUsers = GetMessage = _unimplemented
    ListConversations = MarkConversationRead = _unimplemented
    ListDeadLetters = ReplayDeadLetters = DropDeadLetters = _unimplemented

    @staticmethod
    def _message(message_id: int, content: str) -> Any:
        now = Timestamp()
        now.GetCurrentTime()
        return message_pb2.Message(
            id=message_id,
            sender_email="ada@example.com",
            receiver_email="bob@example.com",
            content=content,
            timestamp=now,
        )


@dataclass
class FakeServer:
    backend: FakeBackend
    address: str

    def client_kwargs(self) -> dict[str, Any]:
        """Client.connect arguments pointing UserService and MessageService here."""
        return {"user_grpc": self.address, "message_grpc": self.address, "retries": 2}


def serve(backend: FakeBackend) -> Iterator[FakeServer]:
    """Run ``backend`` on a threaded gRPC server on a free loopback port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    message_pb2_grpc.add_MessageServiceServicer_to_server(backend, server)
    user_pb2_grpc.add_UserServiceServicer_to_server(backend, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield FakeServer(backend, f"127.0.0.1:{port}")
    finally:
        server.stop(grace=None)
