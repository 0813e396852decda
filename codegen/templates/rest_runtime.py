"""Runtime shared by every generated REST package: Connexion wiring and its workarounds."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.problem import problem
from connexion.resolver import Resolver
from connexion.security import BearerSecurityHandler
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TokenInfo = dict[str, Any]
"""Claims of a verified bearer token, as returned by the app's token verifier."""

TokenVerifier = Callable[[str], Awaitable[TokenInfo | None]]
"""Checks a bearer token; returns its claims, or None when the token is not valid."""

Lifespan = Callable[[Any], Any]

JSON_HEADERS = {"Content-Type": "application/json"}
DEFAULT_MAX_BODY_BYTES = 64 * 1024


T = TypeVar("T")


@dataclass(frozen=True)
class Reply(Generic[T]):
    """A body with the status and headers to send it with.

    Handlers return one where the contract declares response headers, or more than
    one JSON response, for the operation; elsewhere they return the body alone.
    """

    body: T
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(result: Any, status: int) -> tuple[Any, int, dict[str, str]]:
    """A JSON reply with an explicit content type.

    Connexion answers 500 when an operation declares both application/json and
    application/problem+json responses and the handler returns a bare dict.
    """
    if isinstance(result, Reply):
        return result.body, result.status or status, {**result.headers, **JSON_HEADERS}
    return result, status, dict(JSON_HEADERS)


def no_content() -> Response:
    """A bare 204; Connexion would otherwise label it application/problem+json."""
    return Response(status_code=204)


def _bearer_handler(verify: TokenVerifier) -> type[BearerSecurityHandler]:
    class _Handler(BearerSecurityHandler):  # type: ignore[misc]
        def _resolve_func(self, security_scheme: Any) -> TokenVerifier:
            return verify

    return _Handler


async def _bad_encoding(_request: ConnexionRequest, _exc: Exception) -> ConnexionResponse:
    # A JSON body that is not valid UTF-8 otherwise surfaces as a 500.
    return problem(400, "Bad Request", "The request body is not valid UTF-8 JSON.")


async def _problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, ProblemException)
    return exc.to_problem()


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def documented_methods(spec: Path) -> list[tuple[re.Pattern[str], str]]:
    """(path regex, "GET, POST") for each path of the OpenAPI document, literal paths first."""
    document = yaml.safe_load(spec.read_text(encoding="utf-8"))
    table = []
    for template, item in document.get("paths", {}).items():
        methods = ", ".join(m.upper() for m in HTTP_METHODS if m in item)
        regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        table.append((template.count("{"), re.compile(f"^{regex}$"), methods))
    return [(regex, methods) for _, regex, methods in sorted(table, key=lambda row: row[0])]


def _method_not_allowed(
    spec: Path,
) -> Callable[[ConnexionRequest, Exception], Awaitable[ConnexionResponse]]:
    """A 405 whose Allow header lists every method the document gives the path (Starlette's
    lists only those of the first route matching the path, one route per operation)."""
    table = documented_methods(spec)

    async def handler(request: ConnexionRequest, _exc: Exception) -> ConnexionResponse:
        path = request.url.path
        allowed = next((methods for regex, methods in table if regex.match(path)), "")
        detail = f"{request.method} is not supported here; allowed: {allowed}."
        return problem(405, "Method Not Allowed", detail, headers={"Allow": allowed})

    return handler


async def send_problem(send: Send, status: int, title: str, detail: str) -> None:
    """Answer with an application/problem+json document, straight from ASGI middleware."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body.encode())).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


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
    """ASGI middleware answering 413 problem+json for bodies above a byte limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        detail = f"The request body exceeds {self.max_bytes} bytes."
        await send_problem(send, 413, "Payload Too Large", detail)


class _TooLarge(Exception):
    pass


def build_app(
    *,
    import_name: str,
    spec: Path,
    operations: Mapping[str, Callable[..., Awaitable[Any]]],
    verify_token: TokenVerifier,
    lifespan: Lifespan | None = None,
    validate_responses: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    middlewares: Sequence[Any] = (),
) -> AsyncApp:
    """Build a Connexion AsyncApp routing each operationId to `operations[operationId]`.

    Request and response validation are on, Swagger UI is served at /ui/, the
    OpenAPI document at /openapi.json, and every error is application/problem+json.
    """
    app = AsyncApp(import_name, lifespan=lifespan)
    app.add_api(
        spec,
        resolver=Resolver(function_resolver=lambda operation_id: operations[operation_id]),
        strict_validation=True,
        validate_responses=validate_responses,
        pythonic_params=False,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=True),
        security_map={"bearer": _bearer_handler(verify_token)},
    )
    app.add_error_handler(UnicodeDecodeError, _bad_encoding)
    app.add_error_handler(ProblemException, _problem)
    app.add_error_handler(405, _method_not_allowed(spec))
    # Outermost, so an oversized body is refused before anything reads it.
    app.add_middleware(
        BodySizeLimit,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        max_bytes=max_body_bytes,
    )
    app.add_middleware(PathControlCharacters, position=MiddlewarePosition.BEFORE_EXCEPTION)
    for middleware in middlewares:
        app.add_middleware(middleware)
    return app
