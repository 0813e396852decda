"""The REST edge: request ids, bearer-token verification and DomainError → problem+json.

:func:`install_edge` puts both on a Connexion app: every request runs with a request id (the
caller's ``X-Request-Id`` when it is a plain token, else a new one), echoed in the response's
``X-Request-Id`` and carried by every log line written while it is handled; domain errors and
Redis outages become problem+json once, for every operation. The same outermost middleware
(:class:`RestEdge`) records the HTTP metrics once :func:`attach_metrics` gave it them. When
tracing is on (:mod:`services.common.tracing`), each request is also a server span (the ASGI
instrumentation, continuing the caller's W3C ``traceparent``) tagged with its request id.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

import redis.exceptions
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from missive.rest._runtime import add_outermost, problem_response, problem_type
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.auth import TokenVerifier
from services.common.domain import (
    DomainError,
    Principal,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from services.common.logging import (
    REQUEST_ID_HEADER,
    accepted_request_id,
    reset_request_id,
    set_request_id,
)
from services.common.metrics.http_metrics import HttpMetrics
from services.common.redis import unavailable_reason
from services.common.sessions import Sessions
from services.common.tracing import asgi_middleware, tag_request_id
from services.common.tracing import enabled as tracing_enabled

__all__ = [
    "EdgeOptions",
    "RestEdge",
    "TracedRequests",
    "attach_metrics",
    "bearer_verifier",
    "install_edge",
    "own_email",
    "principal",
]

logger = logging.getLogger(__name__)


def bearer_verifier(
    verifier: TokenVerifier, sessions: Sessions | None = None
) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """The `verify_token` of a generated create_app: claims of a valid user token, else None.

    With ``sessions``, a token whose account is gone or whose version was revoked is refused
    too (401); when the account cannot be checked now, the answer is 503 (never accepted).
    """

    async def verify(token: str) -> dict[str, Any] | None:
        try:
            principal = verifier.verify_user(token)
            if sessions is not None:
                await sessions.check(principal)
        except Unauthenticated:
            return None
        except Unavailable as exc:  # raised inside Connexion's security check: its own problem
            raise ProblemException(
                status=exc.http_status,
                title=exc.title,
                detail=exc.message,
                type=problem_type(exc.http_status, exc.problem_kind),
            ) from exc
        return {
            "sub": principal.name,
            "kind": principal.kind,
            "aid": principal.account_id,
            "tv": principal.token_version,
            "exp": principal.expires_at,
        }

    return verify


def principal(token_info: dict[str, Any]) -> Principal:
    """The caller of a REST operation, from the claims bearer_verifier returned."""
    return Principal(
        "user",
        str(token_info["sub"]),
        account_id=str(token_info.get("aid", "")),
        token_version=int(token_info.get("tv", 0)),
        expires_at=float(token_info.get("exp", 0.0)),
    )


def own_email(token_info: dict[str, Any], email: str | None) -> str:
    """The `email` query parameter, defaulting to the caller's own address when left out.

    A given address is passed on unchanged, so the service still refuses (403) one that is not
    the caller's.
    """
    return str(token_info["sub"]) if email is None else email


async def _domain_problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, DomainError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return problem_response(
        exc.http_status, exc.title, exc.message, kind=exc.problem_kind, headers=headers
    )


async def _redis_problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    reason = unavailable_reason(exc)
    if reason is None:
        logger.error("redis error: %s", exc)
        detail = "The request could not be completed."
        return problem_response(500, "Internal Server Error", detail)
    logger.warning("redis unavailable: %s", exc)
    return problem_response(503, "Service Unavailable", f"{reason[0].upper()}{reason[1:]}.")


class EdgeOptions:
    """What a :class:`RestEdge` does besides request ids: the app's HTTP metrics, once set."""

    def __init__(self) -> None:
        self.metrics: HttpMetrics | None = None


class RestEdge:
    """ASGI middleware, outermost: request ids and, once attached, HTTP metrics and ``/metrics``.

    Each HTTP request runs with a request id, echoed in ``X-Request-Id``: the request's
    ``X-Request-Id`` when it is a plain token (letters, digits, ``._-``, at most 64), else a
    new one. With metrics attached (:func:`attach_metrics`), ``GET /metrics`` is the
    exposition and every other request is counted by route template and status. One
    middleware for both: each ASGI layer costs every request a call and a wrapped ``send``.
    """

    def __init__(self, app: ASGIApp, options: EdgeOptions | None = None) -> None:
        self.app = app
        self.options = options or EdgeOptions()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.options.metrics
        if metrics is not None and metrics.is_exposition(scope):
            await metrics.exposition(scope, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_KEY:
                given = value.decode("latin-1")
                break
        request_id = accepted_request_id(given)
        id_header = (_REQUEST_ID_KEY, request_id.encode("latin-1"))
        status = 500  # an exception before the response started becomes a 500
        start = perf_counter()

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *(item for item in message.get("headers", ()) if item[0] != _REQUEST_ID_KEY),
                    id_header,
                ]
            await send(message)

        token = set_request_id(request_id)
        try:
            tag_request_id(request_id)
            logger.debug("handling %s %s", scope.get("method"), scope.get("path"))  # DEBUG only
            await self.app(scope, receive, edge_send)
        finally:
            reset_request_id(token)
            if metrics is not None:
                metrics.record(scope, status, perf_counter() - start)


_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode("latin-1")
_EDGES: weakref.WeakKeyDictionary[Any, EdgeOptions] = weakref.WeakKeyDictionary()


class TracedRequests:
    """ASGI middleware: a server span per HTTP request (OpenTelemetry's ASGI instrumentation).

    Installed only when tracing is on; ``/health`` and ``/metrics`` are not traced unless
    ``OTEL_PYTHON_ASGI_EXCLUDED_URLS`` says otherwise.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app: ASGIApp = asgi_middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def install_edge(app: AsyncApp) -> AsyncApp:
    """Request ids, and domain errors and Redis outages translated once, for every operation.

    The request ids come from a :class:`RestEdge` outside every other middleware (problem
    responses carry the id too); :func:`attach_metrics` gives it the app's HTTP metrics. When
    traced, the span encloses it, so the request id's scope runs inside the span.
    """
    options = EdgeOptions()
    add_outermost(app, RestEdge, options=options)
    if tracing_enabled():
        add_outermost(app, TracedRequests)
    _EDGES[app] = options
    app.add_error_handler(DomainError, _domain_problem)
    app.add_error_handler(redis.exceptions.RedisError, _redis_problem)
    app.add_error_handler(redis.exceptions.RedisClusterException, _redis_problem)
    return app


def attach_metrics(app: object, metrics: HttpMetrics) -> bool:
    """Have the :class:`RestEdge` of ``app`` (from :func:`install_edge`) record ``metrics``
    and serve their exposition; False when ``app`` has no such edge."""
    try:
        options = _EDGES.get(app)
    except TypeError:  # not weakly referenceable: no edge of ours
        return False
    if options is None:
        return False
    options.metrics = metrics
    return True
