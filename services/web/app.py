"""The web inbox's pages, form posts and live event stream (a Starlette application).

Every route acts for the user whose access token is in the session cookie, through the SDK,
exactly as the ``missive`` command does: the services decide what that user may see. Any
UNAUTHENTICATED answer (expired, revoked or unknown token) signs the browser out.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from missive_client import (
    AlreadyExists,
    AsyncClient,
    Conversation,
    DeadlineExceeded,
    InvalidArgument,
    Message,
    MissiveError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from services.web.live import (
    EVENT_SIGNED_OUT,
    RETRY_MS,
    Cursor,
    LiveStreams,
    bridge,
    until_closed,
)
from services.web.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    SecurityHeaders,
    Sessions,
    seconds_left,
    token_email,
)
from services.web.settings import Settings

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 30
"""Messages per page of a conversation."""
MAX_CONVERSATIONS = 200
"""Conversations listed in the sidebar (most recent first)."""
MAX_FORM_BYTES = 64 * 1024
MAX_CONTENT_CHARS = 4096
MARK_READ_CONCURRENCY = 8

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


def _web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


# -- sessions -------------------------------------------------------------------------------


def _session_token(request: Request) -> str:
    """The signed-in user's access token; SignedOut when there is none or it has expired."""
    token = _web(request).sessions.token(request)
    if token is None:
        raise SignedOut("none")
    left = seconds_left(token)
    if token_email(token) is None or (left is not None and left <= 0):
        raise SignedOut("expired")
    return token


@asynccontextmanager
async def _signed_in(request: Request) -> AsyncIterator[tuple[AsyncClient, str]]:
    """An SDK client acting as the signed-in user, and their email."""
    token = _session_token(request)
    email = token_email(token)
    assert email is not None
    async with _web(request).client(token) as client:
        try:
            yield client, email
        except Unauthenticated as exc:
            logger.info("session of %s refused by the services: %s", email, exc)
            raise SignedOut("expired") from exc


async def _form(request: Request) -> dict[str, str]:
    """The posted form (bounded), after the CSRF check; 403 without a valid token."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise HTTPException(413, "The form is too large.")
    form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_FORM_BYTES)
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    submitted = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD)
    if not _web(request).sessions.csrf_valid(request, submitted):
        raise HTTPException(
            403, "This form has expired or did not come from this site. Reload the page."
        )
    return fields


def _render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
) -> Response:
    """A page, with a CSRF token for its forms (and a CSRF cookie if the browser has none)."""
    web = _web(request)
    value = web.sessions.csrf_value(request)
    pending = value is None
    if value is None:
        value = secrets.token_urlsafe(32)
    context = {"csrf_token": web.sessions.csrf_token(value), **context}
    response = web.templates.TemplateResponse(request, template, context, status_code=status_code)
    if pending:
        web.sessions.set_csrf_cookie(request, response, value)
    return response


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def conversation_url(peer: str) -> str:
    return "/c/" + quote(peer, safe="@")


# -- pages ----------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    try:
        _session_token(request)
    except SignedOut:
        return _redirect("/signin")
    return _redirect("/inbox")


async def signin_page(request: Request) -> Response:
    reason = request.query_params.get("reason", "")
    return _render(request, "signin.html", {"notice": REASONS.get(reason), "email": ""})


async def signin(request: Request) -> Response:
    form = await _form(request)
    email = form.get("email", "").strip()
    password = form.get("password", "")
    if not email or not password:
        return _render(
            request,
            "signin.html",
            {"error": "Enter your email and password.", "email": email},
            status_code=400,
        )
    web = _web(request)
    async with web.client() as client:
        try:
            token = await client.login(email, password)
        except (Unauthenticated, InvalidArgument):
            return _render(
                request,
                "signin.html",
                {"error": "That email and password do not match an account.", "email": email},
                status_code=401,
            )
        except RateLimited as exc:
            wait = f" in {exc.retry_after} seconds" if exc.retry_after else " later"
            return _render(
                request,
                "signin.html",
                {"error": f"Too many attempts. Try again{wait}.", "email": email},
                status_code=429,
            )
    response = _redirect("/inbox")
    web.sessions.sign_in(request, response, token.access_token)
    logger.info("%s signed in", token.email)
    return response


async def register_page(request: Request) -> Response:
    return _render(request, "register.html", {"name": "", "email": ""})


async def register(request: Request) -> Response:
    form = await _form(request)
    name = form.get("name", "").strip()
    email = form.get("email", "").strip()
    password = form.get("password", "")
    context = {"name": name, "email": email}
    if not name or not email or not password:
        return _render(
            request,
            "register.html",
            {**context, "error": "Fill in your name, email and a password."},
            status_code=400,
        )
    web = _web(request)
    async with web.client() as client:
        try:
            await client.users.register(name, email, password)
            token = await client.login(email, password)
        except AlreadyExists:
            return _render(
                request,
                "register.html",
                {**context, "error": "An account with this email already exists. Sign in."},
                status_code=409,
            )
        except InvalidArgument as exc:
            return _render(
                request, "register.html", {**context, "error": exc.message}, status_code=400
            )
        except (Unauthenticated, RateLimited):
            return _redirect("/signin?reason=registered")
    response = _redirect("/inbox")
    web.sessions.sign_in(request, response, token.access_token)
    logger.info("%s registered and signed in", token.email)
    return response


async def signout(request: Request) -> Response:
    await _form(request)
    response = _redirect("/signin?reason=signed-out")
    _web(request).sessions.sign_out(request, response)
    return response


async def _conversations(client: AsyncClient) -> list[Conversation]:
    return await client.messages.conversations(page_size=100).to_list(MAX_CONVERSATIONS)


async def inbox(request: Request) -> Response:
    async with _signed_in(request) as (client, email):
        conversations = await _conversations(client)
    return _render(
        request,
        "inbox.html",
        {
            "me": email,
            "conversations": conversations,
            "unread_total": sum(c.unread_count for c in conversations),
            "peer": None,
            "to": "",
            "content": "",
        },
    )


async def _mark_read(client: AsyncClient, peer: str) -> None:
    """Mark the conversation read, and the notifications of its messages with it."""
    await client.messages.mark_read(peer)
    unread = await client.notifications.list(unread_only=True, page_size=100).to_list(1000)
    from_peer = [n.id for n in unread if n.sender_email == peer]
    limit = asyncio.Semaphore(MARK_READ_CONCURRENCY)

    async def one(notification_id: str) -> None:
        async with limit:
            try:
                await client.notifications.mark_read(notification_id)
            except NotFound:
                pass  # trimmed by retention meanwhile

    await asyncio.gather(*(one(nid) for nid in from_peer))


def _normalised_peer(raw: str) -> str:
    peer = raw.strip().lower()
    if not peer or len(peer) > 254 or "@" not in peer:
        raise HTTPException(404, "There is no such conversation.")
    return peer


async def conversation(request: Request) -> Response:
    peer = _normalised_peer(request.path_params["peer"])
    async with _signed_in(request) as (client, email):
        if peer == email:
            raise HTTPException(404, "There is no conversation with yourself.")
        before = request.query_params.get("before", "")[:512]
        pager = client.messages.list(peer, page_size=PAGE_SIZE)
        page = await (pager.starting_at(before) if before else pager).first_page()
        if any(m.receiver_email == email and not m.read for m in page.items):
            await _mark_read(client, peer)
        conversations = await _conversations(client)
    return _render(
        request,
        "conversation.html",
        {
            "me": email,
            "peer": peer,
            "messages": list(reversed(page.items)),
            "next_token": page.next_page_token,
            "conversations": conversations,
            "unread_total": sum(c.unread_count for c in conversations if c.peer_email != peer),
        },
    )


async def older(request: Request) -> Response:
    """An older page of a conversation, as an HTML fragment (the page's "older" button)."""
    peer = _normalised_peer(request.path_params["peer"])
    token = request.query_params.get("page_token", "")
    if not token or len(token) > 512:
        raise HTTPException(400, "page_token is required")
    async with _signed_in(request) as (client, email):
        pager = client.messages.list(peer, page_size=PAGE_SIZE).starting_at(token)
        page = await pager.first_page()
    response = _web(request).templates.TemplateResponse(
        request, "_messages.html", {"me": email, "messages": list(reversed(page.items))}
    )
    response.headers["x-next-page-token"] = page.next_page_token
    return response


def _message_json(message: Message) -> dict[str, object]:
    return {
        "id": message.id,
        "sender": message.sender_email,
        "receiver": message.receiver_email,
        "content": message.content,
        "sent_at": message.timestamp.isoformat(),
    }


async def send(request: Request) -> Response:
    """Send a message: from a conversation (to its peer) or from the inbox's new-message form."""
    form = await _form(request)
    raw_peer = request.path_params.get("peer") or form.get("to", "")
    content = form.get("content", "")
    peer = raw_peer.strip().lower()
    error = None
    if not peer:
        error = "Enter who the message is for."
    elif not content.strip():
        error = "Write a message first."
    elif len(content) > MAX_CONTENT_CHARS:
        error = f"A message has at most {MAX_CONTENT_CHARS} characters."
    message = None
    async with _signed_in(request) as (client, email):
        if error is None:
            try:
                message = await client.messages.send(peer, content)
            except NotFound:
                error = f"There is no Missive user {peer}."
            except (InvalidArgument, PermissionDenied) as exc:
                error = exc.message
        if message is None and not _wants_json(request):
            conversations = await _conversations(client)
    if message is not None:
        if _wants_json(request):
            return JSONResponse({"message": _message_json(message)}, status_code=201)
        return _redirect(conversation_url(peer))
    assert error is not None
    if _wants_json(request):
        return JSONResponse({"error": error}, status_code=400)
    return _render(
        request,
        "inbox.html",
        {
            "me": email,
            "conversations": conversations,
            "unread_total": sum(c.unread_count for c in conversations),
            "peer": None,
            "to": raw_peer,
            "content": content,
            "error": error,
        },
        status_code=400,
    )


async def mark_read(request: Request) -> Response:
    """The open conversation was seen (a live message arrived while it was on screen)."""
    await _form(request)
    peer = _normalised_peer(request.path_params["peer"])
    async with _signed_in(request) as (client, _email):
        await _mark_read(client, peer)
    return Response(status_code=204)


async def events(request: Request) -> Response:
    """The live channel (Server-Sent Events) of the signed-in user."""
    web = _web(request)
    try:
        token = _session_token(request)
    except SignedOut:
        return EventSourceResponse(_signed_out_event(), ping=0)
    cursor = Cursor.decode(request.headers.get("last-event-id"))
    client = web.client(token)

    def on_reconnect(error: MissiveError | None, wait: float) -> None:
        logger.info("live stream of %s reconnects in %.2fs after %s", client.email, wait, error)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        events = bridge(client, cursor, web.streams, on_reconnect=on_reconnect)
        try:
            async for event in until_closed(events, web.streams.closing):
                yield event
        finally:
            await client.close()

    return EventSourceResponse(
        stream(),
        ping=web.settings.heartbeat_seconds,
        headers={"x-accel-buffering": "no"},
        send_timeout=30,
    )


async def _signed_out_event() -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(data="{}", event=EVENT_SIGNED_OUT, retry=RETRY_MS)


async def health(request: Request) -> Response:
    streams = _web(request).streams
    return JSONResponse({"status": "SERVING", "live_streams": streams.open})


# -- errors -----------------------------------------------------------------------------------


async def _signed_out(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignedOut)
    target = "/signin" if exc.reason == "none" else f"/signin?reason={exc.reason}"
    if _wants_json(request) or request.method != "GET":
        response: Response = JSONResponse({"signed_out": True, "location": target}, 401)
        if request.method != "GET" and not _wants_json(request):
            response = _redirect(target)
    else:
        response = _redirect(target)
    _web(request).sessions.sign_out(request, response)
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
    if _wants_json(request):
        return JSONResponse({"error": text}, status_code=status)
    return _render(request, "error.html", {"status": status, "detail": text}, status_code=status)


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


Handler = Callable[[Request], Awaitable[Response]]


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


def create_asgi(settings: Settings, streams: LiveStreams | None = None) -> SecurityHeaders:
    """The application with its security headers, as served."""
    return SecurityHeaders(create_app(settings, streams))
