"""What every route of the web inbox shares: the session, the CSRF-checked form, rendering.

Every route acts for the user whose access token is in the session cookie, through the SDK,
exactly as the ``missive`` command does: the services decide what that user may see. Any
UNAUTHENTICATED answer (expired, revoked or unknown token) signs the browser out.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from missive_client import AsyncClient, Unauthenticated
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from services.web.live import LiveStreams
from services.web.security import CSRF_FIELD, CSRF_HEADER, Sessions, seconds_left, token_email
from services.web.settings import Settings

logger = logging.getLogger(__name__)

MAX_FORM_BYTES = 64 * 1024

REASONS = {
    "expired": "Your session has expired. Please sign in again.",
    "signed-out": "You have signed out.",
    "registered": "Your account is ready. Sign in to open your inbox.",
}


class SignedOut(Exception):
    """The request has no usable session: it goes to the sign-in page with ``reason``."""

    def __init__(self, reason: str = "expired") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Web:
    """What the routes share: settings, cookies, templates, the open live streams."""

    settings: Settings
    sessions: Sessions
    templates: Jinja2Templates
    streams: LiveStreams

    def client(self, token: str | None = None) -> AsyncClient:
        """An SDK client for one request (connections open on first use, closed after)."""
        s = self.settings
        return AsyncClient(
            user_url=s.user_url,
            user_grpc=s.user_addr,
            message_grpc=s.message_addr,
            notification_grpc=s.notification_addr,
            frontend_grpc=s.frontend_addr,
            transport="grpc",
            timeout=s.call_timeout,
            retries=2,
            token=token,
        )


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


# -- sessions -------------------------------------------------------------------------------


def session_token(request: Request) -> str:
    """The signed-in user's access token; SignedOut when there is none or it has expired."""
    token = web_of(request).sessions.token(request)
    if token is None:
        raise SignedOut("none")
    left = seconds_left(token)
    if token_email(token) is None or (left is not None and left <= 0):
        raise SignedOut("expired")
    return token


@asynccontextmanager
async def signed_in(request: Request) -> AsyncIterator[tuple[AsyncClient, str]]:
    """An SDK client acting as the signed-in user, and their email."""
    token = session_token(request)
    email = token_email(token)
    assert email is not None
    async with web_of(request).client(token) as client:
        try:
            yield client, email
        except Unauthenticated as exc:
            logger.info("session of %s refused by the services: %s", email, exc)
            raise SignedOut("expired") from exc


async def posted_form(request: Request) -> dict[str, str]:
    """The posted form (bounded), after the CSRF check; 403 without a valid token."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise HTTPException(413, "The form is too large.")
    form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_FORM_BYTES)
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    submitted = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)
    if not web_of(request).sessions.csrf_valid(request, submitted):
        raise HTTPException(
            403, "This form has expired or did not come from this site. Reload the page."
        )
    return fields


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """A page, with a CSRF token for its forms (and a CSRF cookie if the browser has none)."""
    web = web_of(request)
    value = web.sessions.csrf_value(request)
    pending = value is None
    if value is None:
        value = secrets.token_urlsafe(32)
    context = {"csrf_token": web.sessions.csrf_token(value), **context}
    response = web.templates.TemplateResponse(request, template, context, status_code=status_code)
    if pending:
        web.sessions.set_csrf_cookie(request, response, value)
    return response


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def conversation_url(peer: str) -> str:
    return "/c/" + quote(peer, safe="@")
