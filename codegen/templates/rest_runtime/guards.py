"""ASGI middlewares refusing, before Connexion, what no contract admits (as problem+json)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import send_problem

DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""The default bound of a request body, in bytes: above it the answer is 413."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a JSON body may have (the contracts need 3)."""


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class PathControlCharacters:
    """ASGI middleware answering 400 problem+json for a path with control characters.

    No path parameter of a contract may hold one, and the router cannot match a decoded
    newline at all, so such a request would otherwise end as a 404 no contract documents.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _CONTROL_CHARACTERS.search(scope.get("path", "")):
            detail = "The request path contains control characters."
            await send_problem(send, 400, "Bad Request", detail)
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware reading the whole request body, bounded, before the app sees it.

    A body above `max_bytes` is a 413 problem+json, whether it announced its size
    (Content-Length) or not (chunked); a chunked body within the limit reaches the app with
    its Content-Length set, as Connexion reads a body without one as missing. A JSON body
    nested deeper than MAX_JSON_DEPTH is a 400 before anything parses it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        length = next((value for name, value in headers if name == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = next((value for name, value in headers if name == b"content-type"), b"")
        if b"json" in content_type.lower() and json_depth(body) > MAX_JSON_DEPTH:
            detail = f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels."
            await send_problem(send, 400, "Bad Request", detail)
            return
        if length is None and body:
            scope = dict(scope)
            scope["headers"] = [
                *(item for item in headers if item[0] != b"transfer-encoding"),
                (b"content-length", str(len(body)).encode()),
            ]
        replayed: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    async def _reject(self, send: Send) -> None:
        detail = f"The request body exceeds {self.max_bytes} bytes."
        await send_problem(send, 413, "Payload Too Large", detail)


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


class SingleAuthorization:
    """ASGI middleware answering 401 problem+json for a request with several Authorization
    headers: which one counts would otherwise depend on the layer reading them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            count = sum(1 for name, _ in scope.get("headers", []) if name == b"authorization")
            if count > 1:
                detail = "The request carries more than one Authorization header; send one."
                challenge = [(b"www-authenticate", b"Bearer")]
                await send_problem(send, 401, "Unauthorized", detail, challenge)
                return
        await self.app(scope, receive, send)
