"""The web inbox as a Starlette application: routes, templates, error pages, security headers."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from missive_client import (
    DeadlineExceeded,
    InvalidArgument,
    MissiveError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.logging import request_id_scope
from services.web.live import LiveStreams
from services.web.pages import (
    conversation,
    events,
    health,
    home,
    inbox,
    mark_read,
    older,
    register,
    register_page,
    send,
    signin,
    signin_page,
    signout,
)
from services.web.security import SecurityHeaders, Sessions
from services.web.session import (
    SignedOut,
    Web,
    conversation_url,
    redirect,
    render,
    wants_json,
    web_of,
)
from services.web.settings import Settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

# -- errors -----------------------------------------------------------------------------------


async def _signed_out(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignedOut)
    target = "/signin" if exc.reason == "none" else f"/signin?reason={exc.reason}"
    if wants_json(request) or request.method != "GET":
        response: Response = JSONResponse({"signed_out": True, "location": target}, 401)
        if request.method != "GET" and not wants_json(request):
            response = redirect(target)
    else:
        response = redirect(target)
    web_of(request).sessions.sign_out(request, response)
    return response


async def _missive_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MissiveError)
    if isinstance(exc, Unavailable | DeadlineExceeded):
        status, text = 503, "A Missive service is not answering right now. Try again shortly."
    elif isinstance(exc, PermissionDenied):
        status, text = 403, "You cannot see this."
    elif isinstance(exc, NotFound):
        status, text = 404, "There is nothing here."
    elif isinstance(exc, InvalidArgument):
        status, text = 400, exc.message
    else:
        logger.error("unexpected answer from a service: %s: %s", exc.code, exc)
        status, text = 502, "Something went wrong on our side. Try again shortly."
    return _error_page(request, status, text)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(request, exc.status_code, exc.detail)


def _error_page(request: Request, status: int, text: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": text}, status_code=status)
    return render(request, "error.html", {"status": status, "detail": text}, status_code=status)


# -- the application --------------------------------------------------------------------------


def _initials(email: str) -> str:
    return (email[:1] or "?").upper()


def _hue(email: str) -> int:
    """One of 8 avatar colours; app.js computes the same (sum of UTF-16 code units mod 8)."""
    data = email.encode("utf-16-le")
    return sum(int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)) % 8


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M")


def _date_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC")


def create_templates() -> Jinja2Templates:
    """The page templates; every ``{{ value }}`` is HTML-escaped (autoescape on everywhere)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
    )
    env.filters["initials"] = _initials
    env.filters["hue"] = _hue
    env.filters["clock"] = _clock
    env.filters["date_time"] = _date_time
    env.globals["conversation_url"] = conversation_url
    return Jinja2Templates(env=env)


def routes() -> Sequence[Route | Mount]:
    return [
        Route("/", home),
        Route("/health", health),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/register", register_page, methods=["GET"]),
        Route("/register", register, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/inbox", inbox, methods=["GET"]),
        Route("/send", send, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/c/{peer}", conversation, methods=["GET"]),
        Route("/c/{peer}/older", older, methods=["GET"]),
        Route("/c/{peer}/messages", send, methods=["POST"]),
        Route("/c/{peer}/read", mark_read, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(settings: Settings, streams: LiveStreams | None = None) -> Starlette:
    """The web inbox as an ASGI application (wrapped in the security headers)."""
    app = Starlette(
        routes=list(routes()),
        exception_handlers={
            SignedOut: _signed_out,
            MissiveError: _missive_error,
            HTTPException: _http_error,
        },
    )
    app.state.web = Web(
        settings=settings,
        sessions=Sessions(settings.secret, force_secure=settings.secure_cookies),
        templates=create_templates(),
        streams=streams if streams is not None else LiveStreams(),
    )
    return app


class RequestIds:
    """ASGI middleware: every request's log lines carry a request id (the caller's
    ``X-Request-Id`` when it is a plain token, else a new one), like the services' edges."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        with request_id_scope(given if _REQUEST_ID.fullmatch(given) else None):
            await self.app(scope, receive, send)


def create_asgi(settings: Settings, streams: LiveStreams | None = None) -> SecurityHeaders:
    """The application with its request ids and security headers, as served."""
    return SecurityHeaders(RequestIds(create_app(settings, streams)))
