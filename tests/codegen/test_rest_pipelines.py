"""Each operation's pipeline answers exactly as Connexion's middleware chain does.

The same generated app (openapi/message.yaml, with the services' REST edge: domain errors and
Redis outages as problems) is built twice: as generated, where a routed request goes through
its operation's pipeline (`OperationPipelines`), and with Connexion's own routing middleware in
its place, where it goes through every middleware. Every request below — answered, refused by
the bearer check, by parameter or body validation, by the media type, by the guards, by a
domain error, by response validation, by a crash, unrouted — gets the same status, headers and
body from both, byte for byte (the request id aside, a fresh one per request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.exceptions
from connexion.middleware.routing import RoutingMiddleware
from missive.rest._runtime import OperationPipelines, TokenInfo, add_outermost
from missive.rest.message import MessageApi, create_app

from services.common.domain import NotFound, PermissionDenied, RateLimited
from services.common.rest_edge import install_edge

OWNER = "ada@example.com"
TOKEN = "good-token"
MESSAGE = {
    "id": 7,
    "sender_email": OWNER,
    "receiver_email": "bob@example.com",
    "content": "Hi",
    "timestamp": "2026-12-05T10:00:00Z",
    "read": False,
}
CONVERSATION = {
    "peer_email": "bob@example.com",
    "last_message": MESSAGE,
    "unread_count": 1,
    "message_count": 3,
    "updated_at": "2026-12-05T10:00:00Z",
}


class Handlers(MessageApi):
    """Answers by the request: `email` and `peer_email` choose a failure."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def list_conversations(self, **kwargs: Any) -> Any:
        self.calls.append(("list_conversations", kwargs))
        email = kwargs["email"]
        if email == "bad-reply@example.com":
            return {"conversations": [{"peer_email": 3}], "next_page_token": ""}
        if email == "crash@example.com":
            raise RuntimeError("boom")
        if email == "redis@example.com":
            raise redis.exceptions.ConnectionError("Connection refused")
        if email is not None and email != OWNER:
            raise PermissionDenied("email: not the caller's own address")
        return {"conversations": [CONVERSATION], "next_page_token": ""}

    async def get_messages(self, **kwargs: Any) -> Any:
        self.calls.append(("get_messages", kwargs))
        if kwargs["peer_email"] == "busy@example.com":
            raise RateLimited("too many requests", retry_after=3)
        return {"messages": [MESSAGE], "next_page_token": ""}

    async def send_message(self, **kwargs: Any) -> Any:
        self.calls.append(("send_message", kwargs))
        return MESSAGE

    async def get_message(self, **kwargs: Any) -> Any:
        self.calls.append(("get_message", kwargs))
        if kwargs["id"] == 404:
            raise NotFound("message 404 does not exist")
        return MESSAGE

    async def delete_message(self, **kwargs: Any) -> None:
        self.calls.append(("delete_message", kwargs))

    async def mark_conversation_read(self, **kwargs: Any) -> Any:
        self.calls.append(("mark_conversation_read", kwargs))
        return CONVERSATION

    async def health(self) -> Any:
        return {"status": "SERVING"}


async def verify(token: str) -> TokenInfo | None:
    return {"sub": OWNER} if token == TOKEN else None


AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
SEND = b'{"sender_email": "ada@example.com", "receiver_email": "bob@example.com", "content": "Hi"}'

REQUESTS: list[tuple[str, str, dict[str, str], bytes]] = [
    ("GET", "/list_conversations", AUTH, b""),
    ("GET", "/list_conversations?email=ada%40example.com&page_size=5", AUTH, b""),
    ("HEAD", "/list_conversations", AUTH, b""),
    ("GET", "/list_conversations?page_size=0", AUTH, b""),
    ("GET", "/list_conversations?page_size=x", AUTH, b""),
    ("GET", "/list_conversations?colour=red", AUTH, b""),
    ("GET", "/list_conversations?email=not-an-address", AUTH, b""),
    ("GET", "/list_conversations?email=eve%40example.com", AUTH, b""),
    ("GET", "/list_conversations?email=bad-reply%40example.com", AUTH, b""),
    ("GET", "/list_conversations?email=crash%40example.com", AUTH, b""),
    ("GET", "/list_conversations?email=redis%40example.com", AUTH, b""),
    ("GET", "/list_conversations", {}, b""),
    ("GET", "/list_conversations", {"Authorization": "Bearer nope"}, b""),
    ("GET", "/list_conversations", {"Authorization": "Bearer"}, b""),
    ("GET", "/list_conversations", {"Authorization": "Basic eDp5"}, b""),
    ("GET", "/messages?peer_email=bob%40example.com", AUTH, b""),
    ("GET", "/messages?peer_email=busy%40example.com", AUTH, b""),
    ("GET", "/messages/7", AUTH, b""),
    ("GET", "/messages/404", AUTH, b""),
    ("GET", "/messages/seven", AUTH, b""),
    ("DELETE", "/messages/7", AUTH, b""),
    ("POST", "/messages", JSON, SEND),
    ("POST", "/messages", JSON, SEND.replace(b'"Hi"', b"5")),
    ("POST", "/messages", JSON, b'{"sender_email": "ada@example.com"}'),
    ("POST", "/messages", JSON, b"{not json"),
    ("POST", "/messages", JSON, b'{"content": "\xff"}'),
    ("POST", "/messages", JSON, b""),
    ("POST", "/messages", JSON, b"[" * 40 + b"]" * 40),
    ("POST", "/messages", {**AUTH, "Content-Type": "text/plain"}, b"hello"),
    ("POST", "/messages", {**AUTH, "Content-Type": "application/json; charset=utf-8"}, SEND),
    ("POST", "/messages", AUTH, SEND),
    ("POST", "/conversations/bob%40example.com/read", JSON, b'{"email": "ada@example.com"}'),
    ("POST", "/conversations/bob%40example.com/read", JSON, b'{"email": 1}'),
    ("PUT", "/list_conversations", AUTH, b""),
    ("GET", "/nowhere", AUTH, b""),
    ("GET", "/list_conversations/", AUTH, b""),
    ("GET", "/health", {}, b""),
    ("GET", "/openapi.json", {}, b""),
]


class Routed:
    """Outermost middleware: what routing left in each request's scope, as the outer
    middlewares (the REST edge, tracing) see it once the request was answered."""

    def __init__(self, app: Any, seen: list[dict[str, Any]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.seen.append(
                {
                    "keys": sorted(scope),
                    "route": getattr(scope.get("route"), "path", None),
                    "endpoint": type(scope.get("endpoint")).__name__,
                    "path_params": scope.get("path_params"),
                    "root_path": scope.get("root_path"),
                    "app_root_path": scope.get("app_root_path"),
                }
            )


def _app(handlers: Handlers, *, pipelines: bool, seen: list[dict[str, Any]] | None = None) -> Any:
    app = install_edge(create_app(handlers, verify_token=verify))
    if not pipelines:  # Connexion's routing middleware, as it comes
        stack = app.middleware.middlewares
        stack[stack.index(OperationPipelines)] = RoutingMiddleware
    if seen is not None:
        add_outermost(app, Routed, seen=seen)
    return app


SEEN: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])


@pytest.fixture
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Any]]:
    for seen in SEEN:
        seen.clear()
    piped = _app(Handlers(), pipelines=True, seen=SEEN[0])
    chained = _app(Handlers(), pipelines=False, seen=SEEN[1])
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=piped), base_url="http://t") as one,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=chained), base_url="http://t") as two,
    ):
        yield one, two, piped


def _answer(reply: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in reply.headers.multi_items() if k != "x-request-id"]
    return reply.status_code, headers, reply.content


async def test_every_request_gets_the_same_answer_through_both(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, Any],
) -> None:
    piped, chained, app = clients
    statuses = set()
    for method, path, headers, body in REQUESTS:
        one = await piped.request(method, path, headers=headers, content=body)
        two = await chained.request(method, path, headers=headers, content=body)
        assert _answer(one) == _answer(two), (method, path, one.text, two.text)
        statuses.add(one.status_code)
    # The list covers answers and refusals of every kind.
    assert statuses >= {200, 201, 204, 400, 401, 403, 404, 405, 415, 429, 500, 503}
    pipelines = next(
        m for m in app.middleware.middleware_stack if isinstance(m, OperationPipelines)
    )
    assert pipelines._pipelines, "the routed requests went through the pipelines"


async def test_the_views_get_the_same_arguments_through_both() -> None:
    piped_handlers, chained_handlers = Handlers(), Handlers()
    apps = (_app(piped_handlers, pipelines=True), _app(chained_handlers, pipelines=False))
    for app in apps:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            for method, path, headers, body in REQUESTS:
                await client.request(method, path, headers=headers, content=body)
    assert piped_handlers.calls == chained_handlers.calls
    assert len(piped_handlers.calls) >= 10
