"""ASGI middleware refusing, before Connexion, what no contract admits (as problem+json)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import send_problem

DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""The default bound of a request body, in bytes: above it the answer is 413."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a JSON body may have (the contracts need 3)."""


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class RequestGuards:
    """ASGI middleware refusing, before Connexion reads anything, what no contract admits.

    In this order, each as a problem+json:

    - a body above `max_bytes` is a 413, whether it announced its size (Content-Length) or
      not (chunked); the whole body is read, bounded, before the app sees it, and a chunked
      body within the limit reaches the app with its Content-Length set, as Connexion reads
      a body without one as missing;
    - a JSON body nested deeper than MAX_JSON_DEPTH is a 400 before anything parses it;
    - a path with control characters is a 400: no path parameter of a contract may hold one,
      and the router cannot match a decoded newline at all, so such a request would
      otherwise end as a 404 no contract documents;
    - several Authorization headers are a 401: which one counts would otherwise depend on
      the layer reading them.

    One middleware rather than one per check: each ASGI layer costs every request a call.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        length, content_type, authorizations = _scan(headers)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        message = await receive()
        body = message.get("body", b"") if message["type"] == "http.request" else None
        if body is not None and message.get("more_body", False):
            message, body = await self._rest_of(body, receive)
        if body is None:  # the client went away: let the app see it
            await self.app(scope, _replay([message], receive), send)
            return
        if len(body) > self.max_bytes:
            await self._reject(send)
            return
        refusal = _refusal(scope, body, content_type, authorizations)
        if refusal is not None:
            await send_problem(send, *refusal)
            return
        if length is None and body:
            scope = dict(scope)
            scope["headers"] = [
                *(item for item in headers if item[0] != b"transfer-encoding"),
                (b"content-length", str(len(body)).encode()),
            ]
        replayed: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    async def _rest_of(self, first: bytes, receive: Receive) -> tuple[Message, bytes | None]:
        """The whole body from its first chunk on: (last message, body), the body None when
        the client went away, and cut short once it exceeds the bound."""
        chunks = [first]
        received = len(first)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message, None
            chunk = message.get("body", b"")
            received += len(chunk)
            chunks.append(chunk)
            if received > self.max_bytes or not message.get("more_body", False):
                return message, b"".join(chunks)

    async def _reject(self, send: Send) -> None:
        detail = f"The request body exceeds {self.max_bytes} bytes."
        await send_problem(send, 413, "Payload Too Large", detail)


def _scan(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None, int]:
    """(first Content-Length, first Content-Type, number of Authorization headers)."""
    length = content_type = None
    authorizations = 0
    for name, value in headers:
        if name == b"content-length":
            if length is None:
                length = value
        elif name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"authorization":
            authorizations += 1
    return length, content_type, authorizations


def _refusal(
    scope: Scope, body: bytes, content_type: bytes | None, authorizations: int
) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
    """(status, title, detail, headers) of the problem refusing a request, None to admit it."""
    if body and content_type is not None and b"json" in content_type.lower():
        if json_depth(body) > MAX_JSON_DEPTH:
            detail = f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels."
            return 400, "Bad Request", detail, []
    if _CONTROL_CHARACTERS.search(scope.get("path", "")):
        return 400, "Bad Request", "The request path contains control characters.", []
    if authorizations > 1:
        detail = "The request carries more than one Authorization header; send one."
        return 401, "Unauthorized", detail, [(b"www-authenticate", b"Bearer")]
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel giving `messages` first, then whatever `receive` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


# A string (its closing quote optional, so the scan stays linear on hostile text) or a bracket.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets in strings skipped).

    Only a bound: on text that is not JSON it may overcount, and the parser rejects it anyway.
    """
    depth = deepest = 0
    for token in _JSON_TOKEN.findall(body):
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth = max(depth - 1, 0)
    return deepest
