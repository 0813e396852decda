"""The pages, form posts and live event stream of the web inbox (the route handlers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from missive_client import (
    AlreadyExists,
    AsyncClient,
    Conversation,
    InvalidArgument,
    Message,
    MissiveError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.web.live import (
    EVENT_SIGNED_OUT,
    RETRY_MS,
    Cursor,
    bridge,
    until_closed,
)
from services.web.session import (
    REASONS,
    SignedOut,
    conversation_url,
    posted_form,
    redirect,
    render,
    session_token,
    signed_in,
    wants_json,
    web_of,
)

logger = logging.getLogger(__name__)

PAGE_SIZE = 30
"""Messages per page of a conversation."""
MAX_CONVERSATIONS = 200
"""Conversations listed in the sidebar (most recent first)."""
MAX_CONTENT_CHARS = 4096
MARK_READ_CONCURRENCY = 8


async def home(request: Request) -> Response:
    try:
        session_token(request)
    except SignedOut:
        return redirect("/signin")
    return redirect("/inbox")


async def signin_page(request: Request) -> Response:
    reason = request.query_params.get("reason", "")
    return render(request, "signin.html", {"notice": REASONS.get(reason), "email": ""})


async def signin(request: Request) -> Response:
    form = await posted_form(request)
    email = form.get("email", "").strip()
    password = form.get("password", "")
    if not email or not password:
        return render(
            request,
            "signin.html",
            {"error": "Enter your email and password.", "email": email},
            status_code=400,
        )
    web = web_of(request)
    async with web.client() as client:
        try:
            token = await client.login(email, password)
        except (Unauthenticated, InvalidArgument):
            return render(
                request,
                "signin.html",
                {"error": "That email and password do not match an account.", "email": email},
                status_code=401,
            )
        except RateLimited as exc:
            wait = f" in {exc.retry_after} seconds" if exc.retry_after else " later"
            return render(
                request,
                "signin.html",
                {"error": f"Too many attempts. Try again{wait}.", "email": email},
                status_code=429,
            )
    response = redirect("/inbox")
    web.sessions.sign_in(request, response, token.access_token)
    logger.info("%s signed in", token.email)
    return response


async def register_page(request: Request) -> Response:
    return render(request, "register.html", {"name": "", "email": ""})


async def register(request: Request) -> Response:
    form = await posted_form(request)
    name = form.get("name", "").strip()
    email = form.get("email", "").strip()
    password = form.get("password", "")
    context = {"name": name, "email": email}
    if not name or not email or not password:
        return render(
            request,
            "register.html",
            {**context, "error": "Fill in your name, email and a password."},
            status_code=400,
        )
    web = web_of(request)
    async with web.client() as client:
        try:
            await client.users.register(name, email, password)
            token = await client.login(email, password)
        except AlreadyExists:
            return render(
                request,
                "register.html",
                {**context, "error": "An account with this email already exists. Sign in."},
                status_code=409,
            )
        except InvalidArgument as exc:
            return render(
                request, "register.html", {**context, "error": exc.message}, status_code=400
            )
        except (Unauthenticated, RateLimited):
            return redirect("/signin?reason=registered")
    response = redirect("/inbox")
    web.sessions.sign_in(request, response, token.access_token)
    logger.info("%s registered and signed in", token.email)
    return response


async def signout(request: Request) -> Response:
    await posted_form(request)
    response = redirect("/signin?reason=signed-out")
    web_of(request).sessions.sign_out(request, response)
    return response


async def _conversations(client: AsyncClient) -> list[Conversation]:
    return await client.messages.conversations(page_size=100).to_list(MAX_CONVERSATIONS)


def _inbox_page(
    request: Request,
    email: str,
    conversations: list[Conversation],
    *,
    to: str = "",
    content: str = "",
    error: str | None = None,
) -> Response:
    """The inbox: every conversation, and the new-message form (refilled after an error)."""
    return render(
        request,
        "inbox.html",
        {
            "me": email,
            "conversations": conversations,
            "unread_total": sum(c.unread_count for c in conversations),
            "peer": None,
            "to": to,
            "content": content,
            "error": error,
        },
        status_code=200 if error is None else 400,
    )


async def inbox(request: Request) -> Response:
    async with signed_in(request) as (client, email):
        conversations = await _conversations(client)
    return _inbox_page(request, email, conversations)


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
    async with signed_in(request) as (client, email):
        if peer == email:
            raise HTTPException(404, "There is no conversation with yourself.")
        before = request.query_params.get("before", "")[:512]
        pager = client.messages.list(peer, page_size=PAGE_SIZE)
        page = await (pager.starting_at(before) if before else pager).first_page()
        if any(m.receiver_email == email and not m.read for m in page.items):
            await _mark_read(client, peer)
        conversations = await _conversations(client)
    return render(
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
    async with signed_in(request) as (client, email):
        pager = client.messages.list(peer, page_size=PAGE_SIZE).starting_at(token)
        page = await pager.first_page()
    response = web_of(request).templates.TemplateResponse(
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


def _send_form_error(peer: str, content: str) -> str | None:
    """What is wrong with the new-message form, if anything."""
    if not peer:
        return "Enter who the message is for."
    if not content.strip():
        return "Write a message first."
    if len(content) > MAX_CONTENT_CHARS:
        return f"A message has at most {MAX_CONTENT_CHARS} characters."
    return None


async def send(request: Request) -> Response:
    """Send a message: from a conversation (to its peer) or from the inbox's new-message form."""
    form = await posted_form(request)
    raw_peer = request.path_params.get("peer") or form.get("to", "")
    content = form.get("content", "")
    peer = raw_peer.strip().lower()
    error = _send_form_error(peer, content)
    message = None
    async with signed_in(request) as (client, email):
        if error is None:
            try:
                message = await client.messages.send(peer, content)
            except NotFound:
                error = f"There is no Missive user {peer}."
            except (InvalidArgument, PermissionDenied) as exc:
                error = exc.message
        if message is None and not wants_json(request):
            conversations = await _conversations(client)
    if message is not None:
        if wants_json(request):
            return JSONResponse({"message": _message_json(message)}, status_code=201)
        return redirect(conversation_url(peer))
    assert error is not None
    if wants_json(request):
        return JSONResponse({"error": error}, status_code=400)
    return _inbox_page(request, email, conversations, to=raw_peer, content=content, error=error)


async def mark_read(request: Request) -> Response:
    """The open conversation was seen (a live message arrived while it was on screen)."""
    await posted_form(request)
    peer = _normalised_peer(request.path_params["peer"])
    async with signed_in(request) as (client, _email):
        await _mark_read(client, peer)
    return Response(status_code=204)


async def events(request: Request) -> Response:
    """The live channel (Server-Sent Events) of the signed-in user."""
    web = web_of(request)
    try:
        token = session_token(request)
    except SignedOut:
        return EventSourceResponse(_signed_out_event(), ping=0)
    cursor = Cursor.decode(request.headers.get("last-event-id"))
    client = web.client(token)

    def on_reconnect(error: MissiveError | None, wait: float) -> None:
        logger.info("live stream of %s reconnects in %.2fs after %s", client.email, wait, error)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        events = bridge(client, cursor, web.streams, on_reconnect=on_reconnect)
        try:
            # The bridge ends (its upstream stream closed) before the client it uses does.
            async with contextlib.aclosing(until_closed(events, web.streams.closing)) as live:
                async for event in live:
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
    streams = web_of(request).streams
    return JSONResponse({"status": "SERVING", "live_streams": streams.open})
