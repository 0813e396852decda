"""The live channel: Server-Sent Events bridged from FrontendService's notification stream.

One browser connection = one upstream ``SubscribeNotifications`` stream (through the SDK's
reconnecting ``watch()``), opened when the browser connects and closed when it goes away.

Each event carries, as its SSE ``id``, a :class:`Cursor`: the ids of the most recent
notifications this browser was sent. When the browser reconnects it sends the last one back
as ``Last-Event-ID``; the new upstream stream replays the user's unread notifications, and the
cursor drops those the browser already has, so a reconnect neither loses nor repeats one.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

from missive_client import (
    AsyncClient,
    Message,
    MissiveError,
    NotFound,
    Notification,
    Unauthenticated,
)
from sse_starlette import ServerSentEvent
from sse_starlette.sse import AppStatus

logger = logging.getLogger(__name__)

WINDOW = 64
"""How many of the latest notification ids a cursor remembers exactly."""
MAX_CURSOR_LENGTH = 2048
RETRY_MS = 1000
"""How soon the browser reconnects after the stream ends (the SSE ``retry`` field)."""
EVENT_MESSAGE = "message"
EVENT_SIGNED_OUT = "signed-out"
EVENT_ERROR = "problem"


@dataclass
class Cursor:
    """The notification ids a browser was sent: the latest :data:`WINDOW` exactly.

    Notification ids are message ids, which grow with time, and notifications reach a stream
    in that order except for rare redeliveries. So the cursor keeps the most recent ids
    exactly; an id below them once :data:`WINDOW` were sent counts as sent (it is older than
    everything the browser remembers and was shown then, or read since), while an id inside
    the window that is not in it was never sent and still is.
    """

    ids: list[int] = field(default_factory=list)  # ascending, at most WINDOW

    def seen(self, notification_id: int) -> bool:
        """Whether the browser already has this notification."""
        if not self.ids:
            return False
        if len(self.ids) >= WINDOW and notification_id < self.ids[0]:
            return True
        index = bisect.bisect_left(self.ids, notification_id)
        return index < len(self.ids) and self.ids[index] == notification_id

    def add(self, notification_id: int) -> None:
        """Record that the browser was sent ``notification_id``."""
        if self.seen(notification_id):
            return
        bisect.insort(self.ids, notification_id)
        if len(self.ids) > WINDOW:
            del self.ids[0]

    def encode(self) -> str:
        """The SSE event id: the highest id, then hex distances of the others below it."""
        if not self.ids:
            return ""
        high = self.ids[-1]
        return ".".join([str(high), *(format(high - other, "x") for other in self.ids[:-1])])

    @classmethod
    def decode(cls, raw: str | None) -> Cursor:
        """The cursor a ``Last-Event-ID`` describes; empty (a full replay) when malformed."""
        if not raw or len(raw) > MAX_CURSOR_LENGTH:
            return cls()
        head, *rest = raw.strip().split(".")
        try:
            high = int(head, 10)
            ids = {high, *(high - int(part, 16) for part in rest)}
        except ValueError:
            return cls()
        if high < 1 or min(ids) < 1 or len(ids) > WINDOW:
            return cls()
        return cls(sorted(ids))


def message_payload(notification: Notification, message: Message) -> dict[str, object]:
    """What the page needs to show a new message: it, and the conversation it belongs to."""
    return {
        "notification_id": notification.id,
        "peer": message.sender_email,
        "message": {
            "id": message.id,
            "sender": message.sender_email,
            "receiver": message.receiver_email,
            "content": message.content,
            "sent_at": message.timestamp.isoformat(),
        },
    }


_STREAM_END_POLLS = 50
"""Up to 1 s (50 x 20 ms) for the live streams to end before the server stops."""


class LiveStreams:
    """The open browser streams of this process (each holds one upstream stream).

    :meth:`close` (on shutdown) ends every one of them cleanly, so browsers reconnect
    elsewhere at once instead of waiting for the server's grace period.
    """

    def __init__(self) -> None:
        self.open = 0
        self.opened_total = 0
        self.closing = asyncio.Event()

    def close(self) -> None:
        """End every stream now and any opened from now on."""
        self.closing.set()

    async def end(self) -> None:
        """At shutdown: :meth:`close`, wait up to 1 s for the streams to end, then have
        sse-starlette end any still open."""
        self.close()
        for _ in range(_STREAM_END_POLLS):
            if not self.open:
                break
            await asyncio.sleep(0.02)
        AppStatus.should_exit = True


async def until_closed(
    events: AsyncIterator[ServerSentEvent], closing: asyncio.Event
) -> AsyncGenerator[ServerSentEvent, None]:
    """``events`` until they end or ``closing`` is set (the generator is then cancelled).

    However it ends - ``events`` ran out, ``closing`` was set, or the task iterating this was
    cancelled (the browser left) - ``events`` is finished (its ``finally`` run, its upstream
    stream closed) before it returns: the pending step of ``events`` runs in a task of its
    own, which is cancelled and awaited first."""
    iterator = aiter(events)
    closed = asyncio.ensure_future(closing.wait())
    following: asyncio.Future[ServerSentEvent] | None = None
    try:
        while not closing.is_set():
            following = asyncio.ensure_future(anext(iterator))
            await asyncio.wait({following, closed}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                return
            try:
                yield following.result()
            except StopAsyncIteration:
                return
    finally:
        closed.cancel()
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def bridge(
    client: AsyncClient,
    cursor: Cursor,
    streams: LiveStreams,
    *,
    on_reconnect: Callable[[MissiveError | None, float], None] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The SSE events for one browser connection, until it goes away (or is signed out).

    The caller owns ``client`` and closes it afterwards; ending this generator (the browser
    left: Starlette cancels it) closes the upstream stream first.
    """
    email = client.email
    streams.open += 1
    streams.opened_total += 1
    logger.info("live stream opened for %s (%d open)", email, streams.open)
    try:
        async with client.notifications.watch(on_reconnect=on_reconnect) as notifications:
            async for notification in notifications:
                if cursor.seen(notification.message_id):
                    continue
                try:
                    message = await client.messages.get(notification.message_id)
                except NotFound:
                    logger.info("message %s is gone; not shown", notification.message_id)
                    cursor.add(notification.message_id)
                    continue
                cursor.add(notification.message_id)
                yield ServerSentEvent(
                    data=json.dumps(message_payload(notification, message)),
                    event=EVENT_MESSAGE,
                    id=cursor.encode(),
                    retry=RETRY_MS,
                )
    except Unauthenticated:
        logger.info("live stream of %s: the session ended", email)
        yield ServerSentEvent(data="{}", event=EVENT_SIGNED_OUT, retry=RETRY_MS)
    except MissiveError as exc:
        logger.warning("live stream of %s ended: %s: %s", email, exc.code, exc)
        yield ServerSentEvent(data=json.dumps({"detail": str(exc)}), event=EVENT_ERROR)
    finally:
        streams.open -= 1
        logger.info("live stream closed for %s (%d open)", email, streams.open)
