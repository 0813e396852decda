"""FrontendService domain: the hub of live subscriptions, showing and streaming notifications."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Protocol

from services.common.domain import (
    DomainError,
    InvalidArgument,
    Principal,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from services.common.emails import normalise_email
from services.common.sessions import Sessions
from services.common.tracing import span
from services.frontend.errors import StreamReplaced
from services.frontend.fanout import Bus
from services.frontend.metrics import live_pushed, stream_ended_slow
from services.frontend.settings import MAX_STREAMS, MAX_STREAMS_PER_CLIENT, MAX_STREAMS_PER_USER
from services.notification.models import Notification

logger = logging.getLogger(__name__)

QUEUE_SIZE = 1000
"""Live notifications waiting for one slow stream; one more ends that stream (UNAVAILABLE)."""
SEEN_LIMIT = 10_000
"""Ids one stream remembers for dedupe: far more than a relay redelivers, yet bounded memory."""
RETRY_AFTER_SECONDS = 5
RECHECK_SECONDS = 2.5
"""How often an open stream's token is checked again. FrontendService caches account states
for as long (it has no revocation channel), so a revocation ends a stream within 5 s."""
STREAM_EXPIRED = "the access token of this stream has expired; reconnect with a fresh token"

_NOTIFICATION_ID = re.compile(r"[0-9]{1,19}")


class UnreadSource(Protocol):
    """Where the unread notifications replayed to a new stream come from."""

    async def list_unread(self, email: str, account_id: str = "") -> Sequence[Notification]:
        """All of the user's unread notifications, newest first; Unavailable when unreachable.

        With ``account_id``, only those of that account (never of an earlier, deleted account
        of the same email)."""
        ...


class Subscription:
    """One live stream of one user: its bounded queue and the ids it has already carried."""

    def __init__(self, email: str, queue_size: int, seen_limit: int, client: str = "") -> None:
        self.email = email
        self.client = client
        self.last_active = time.monotonic()
        """When it was opened or last took a notification: the oldest is evicted first."""
        self._queue: deque[Notification] = deque()
        self._queue_size = queue_size
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_limit = seen_limit
        self._wake = asyncio.Event()
        self._error: DomainError | None = None
        # Who opened the stream: only notifications of this account are sent on it, and it
        # ends when the token it was opened with expires or is revoked.
        self.principal: Principal | None = None

    @property
    def account_id(self) -> str:
        return self.principal.account_id if self.principal is not None else ""

    @property
    def closed(self) -> bool:
        """Whether the stream was ended (overflow or shutdown)."""
        return self._error is not None

    def claim(self, notification_id: str) -> bool:
        """Record that this stream carries ``notification_id``; False if it already did."""
        if notification_id in self._seen:
            return False
        self._seen[notification_id] = None
        if len(self._seen) > self._seen_limit:
            self._seen.popitem(last=False)
        return True

    def offer(self, notification: Notification) -> bool:
        """Queue a live notification; False when already carried, ended, or overflowing."""
        if self._error is not None or notification.id in self._seen:
            return False
        if len(self._queue) >= self._queue_size:
            logger.warning("stream of %s fell %d behind; ending it", self.email, self._queue_size)
            stream_ended_slow()
            self.fail(
                Unavailable(
                    "this stream fell too far behind; reconnect to receive the unread "
                    "notifications again"
                )
            )
            return False
        self.claim(notification.id)
        self.last_active = time.monotonic()
        self._queue.append(notification)
        self._wake.set()
        return True

    def fail(self, error: DomainError) -> None:
        """End the stream with ``error``; what was still queued is dropped (it stays stored)."""
        if self._error is None:
            self._error = error
            self._queue.clear()
            self._wake.set()

    async def next(self) -> Notification:
        """The next live notification, waiting for one; raises the error that ended the stream."""
        while True:
            if self._error is not None:
                raise self._error
            if self._queue:
                return live_pushed(self._queue.popleft())
            self._wake.clear()
            await self._wake.wait()


class Hub:
    """The live subscriptions of this process, by receiver email."""

    def __init__(
        self,
        *,
        queue_size: int = QUEUE_SIZE,
        seen_limit: int = SEEN_LIMIT,
        max_streams: int = MAX_STREAMS,
        max_streams_per_user: int = MAX_STREAMS_PER_USER,
        max_streams_per_client: int = MAX_STREAMS_PER_CLIENT,
    ) -> None:
        self._queue_size = queue_size
        self._seen_limit = seen_limit
        self._max_streams = max_streams
        self._max_per_user = max_streams_per_user
        self._max_per_client = max_streams_per_client
        self._streams: dict[str, set[Subscription]] = {}
        self._by_client: dict[str, int] = {}
        self._count = 0
        self._closed = False

    def open_streams(self, email: str | None = None) -> int:
        """How many streams are registered (for one user, or in all)."""
        if email is None:
            return self._count
        return len(self._streams.get(email, ()))

    def register(self, email: str, client: str = "") -> Subscription:
        """A new subscription for ``email`` from client host ``client``, receiving from now on.

        RateLimited when the process or the client host has no room left. An account at its
        limit keeps its newest streams: the one idle longest ends (ABORTED) to make room.
        """
        if self._closed:
            raise Unavailable("FrontendService is shutting down; reconnect to resume")
        if self._by_client.get(client, 0) >= self._max_per_client:
            raise RateLimited(
                f"at most {self._max_per_client} streams may be open from one client; "
                "close one first",
                RETRY_AFTER_SECONDS,
            )
        mine = self._streams.get(email, set())
        if len(mine) >= self._max_per_user:
            oldest = min(mine, key=lambda subscription: subscription.last_active)
            oldest.fail(
                StreamReplaced(
                    f"this stream was closed because its account opened more than "
                    f"{self._max_per_user} streams and it had been idle the longest"
                )
            )
            self.unregister(oldest)
            logger.info("stream of %s replaced by a newer one (%d per account)", email, len(mine))
        elif self._count >= self._max_streams:
            raise RateLimited(
                "FrontendService has no room for more streams; retry later", RETRY_AFTER_SECONDS
            )
        subscription = Subscription(email, self._queue_size, self._seen_limit, client)
        self._streams.setdefault(email, set()).add(subscription)
        self._by_client[client] = self._by_client.get(client, 0) + 1
        self._count += 1
        return subscription

    def unregister(self, subscription: Subscription) -> bool:
        """Forget ``subscription``; False if it was not registered (any more)."""
        mine = self._streams.get(subscription.email)
        if mine is None or subscription not in mine:
            return False
        mine.remove(subscription)
        self._count -= 1
        if not mine:
            del self._streams[subscription.email]
        left = self._by_client.get(subscription.client, 0) - 1
        if left > 0:
            self._by_client[subscription.client] = left
        else:
            self._by_client.pop(subscription.client, None)
        return True

    def publish(self, notification: Notification, receiver_account_id: str = "") -> int:
        """Queue ``notification`` on its receiver's streams (only those of
        ``receiver_account_id`` when given); how many took it."""
        delivered = 0
        for subscription in list(self._streams.get(notification.receiver_email, ())):
            mine = subscription.account_id
            if receiver_account_id and mine and mine != receiver_account_id:
                continue  # a stream of an earlier, deleted account of the same email
            if subscription.offer(notification):
                delivered += 1
            elif subscription.closed:
                self.unregister(subscription)  # overflowed: free its slot at once
        return delivered

    def interrupt(self, error: DomainError) -> int:
        """End every open stream with ``error`` (they may have missed a notification; their
        clients reconnect and replay); how many were open. New streams are still accepted."""
        ended = 0
        for subscriptions in list(self._streams.values()):
            for subscription in list(subscriptions):
                subscription.fail(error)
                self.unregister(subscription)
                ended += 1
        return ended

    def close(self) -> None:
        """End every stream with UNAVAILABLE and refuse new ones: the server is stopping."""
        self._closed = True
        for subscriptions in self._streams.values():
            for subscription in subscriptions:
                subscription.fail(
                    Unavailable("FrontendService is shutting down; reconnect to resume")
                )


def _validated(notification: Notification | None) -> Notification:
    if notification is None:
        raise InvalidArgument("notification is required")
    if not notification.id:
        raise InvalidArgument("notification.id is required")
    if not _NOTIFICATION_ID.fullmatch(notification.id):
        raise InvalidArgument("notification.id must be 1 to 19 decimal digits")
    receiver = normalise_email(notification.receiver_email, "notification.receiver_email")
    return replace(notification, receiver_email=receiver)


class FrontendService:
    """Shows pushed notifications and streams them, after a replay of unread ones, to clients."""

    def __init__(
        self,
        source: UnreadSource,
        hub: Hub | None = None,
        *,
        sessions: Sessions | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
        bus: Bus | None = None,
    ) -> None:
        self.source = source
        self.hub = hub if hub is not None else Hub()
        self.sessions = sessions
        self.recheck_seconds = recheck_seconds
        self.bus = bus
        """The fan-out to the other replicas (None: this process is the only replica)."""
        if bus is not None:
            bus.attach(self.hub.publish, self.hub.interrupt)

    async def deliver(
        self, notification: Notification | None, receiver_account_id: str = ""
    ) -> int:
        """:meth:`receive` here, then hand the notification to the other replicas (with a
        bus); Unavailable when that failed (the pusher retries; streams skip what they showed).
        Live streams of this replica that showed it count in the result."""
        shown, delivered = self._receive(notification, receiver_account_id)
        if self.bus is not None:
            await self.bus.publish([(shown, receiver_account_id)])
        return delivered

    async def deliver_many(
        self, items: Sequence[tuple[Notification | None, str]]
    ) -> list[int | InvalidArgument]:
        """:meth:`deliver` for each ``(notification, receiver_account_id)``, one result per
        item (an invalid item gets its InvalidArgument, alone); one publish for the batch."""
        results: list[int | InvalidArgument] = []
        valid: list[tuple[Notification, str]] = []
        for notification, account_id in items:
            try:
                shown, delivered = self._receive(notification, account_id)
            except InvalidArgument as exc:
                results.append(exc)
                continue
            results.append(delivered)
            valid.append((shown, account_id))
        if self.bus is not None:
            await self.bus.publish(valid)
        return results

    def receive(self, notification: Notification | None, receiver_account_id: str = "") -> int:
        """Show a notification on every live stream of its receiver('s account, when
        ``receiver_account_id`` is given) in this process, with a DEBUG log line (INFO would be
        one line per notification on the hot path). Traced as a ``live push`` span when
        tracing is on. :meth:`deliver` also reaches the other replicas."""
        return self._receive(notification, receiver_account_id)[1]

    def _receive(
        self, notification: Notification | None, receiver_account_id: str
    ) -> tuple[Notification, int]:
        shown = _validated(notification)
        with span("live push", **{"missive.notification_id": shown.id}) as current:
            delivered = self.hub.publish(shown, receiver_account_id)
            if current is not None:
                current.set_attribute("missive.live_streams", delivered)
        logger.debug(
            "notification %s for %s shown on %d live stream(s)",
            shown.id,
            shown.receiver_email,
            delivered,
            extra={
                "fields": {
                    "notification_id": shown.id,
                    "message_id": shown.message_id,
                    "sender_email": shown.sender_email,
                    "receiver_email": shown.receiver_email,
                    "timestamp": shown.timestamp.isoformat(),
                    "delivered_to": delivered,
                }
            },
        )
        return shown, delivered

    def open(self, principal: Principal, raw_email: str, client: str = "") -> Subscription:
        """Register a stream of the caller's own notifications (before the replay is fetched)."""
        email = normalise_email(raw_email)
        principal.require_self(email)
        if self.bus is not None:
            self.bus.require_up()  # it could miss notifications pushed to other replicas
        subscription = self.hub.register(email, client)
        subscription.principal = principal
        logger.info("stream opened for %s (%d open)", email, self.hub.open_streams(email))
        return subscription

    async def stream(self, subscription: Subscription) -> AsyncGenerator[Notification, None]:
        """Unread notifications oldest first, then live ones; each id once; unregisters at the end.

        The subscription is registered before the replay is fetched, so a notification
        stored after the fetch is pushed to it, and one pushed during the fetch is sent once.
        """
        try:
            unread = await self.source.list_unread(
                subscription.email, account_id=subscription.account_id
            )
            for notification in reversed(unread):
                if subscription.closed:
                    break  # ended during the replay: next() raises why
                if not notification.read and subscription.claim(notification.id):
                    yield notification
            while True:
                yield await self._next(subscription)
        finally:
            self.close(subscription)

    async def _next(self, subscription: Subscription) -> Notification:
        """The next live notification; every ``recheck_seconds`` (and when the token expires)
        the stream's token is checked again, ending the stream (Unauthenticated) once it has
        expired or was revoked."""
        principal = subscription.principal
        while True:
            if principal is None or principal.kind != "user" or not principal.expires_at:
                return await subscription.next()
            remaining = principal.expires_at - time.time()
            if remaining <= 0:
                raise Unauthenticated(STREAM_EXPIRED)
            try:
                return await asyncio.wait_for(
                    subscription.next(), timeout=min(self.recheck_seconds, remaining)
                )
            except TimeoutError:
                await self._recheck(principal)

    async def _recheck(self, principal: Principal) -> None:
        if time.time() >= principal.expires_at:
            raise Unauthenticated(STREAM_EXPIRED)
        if self.sessions is None:
            return
        try:
            await self.sessions.check(principal)
        except Unavailable as exc:  # UserService unreachable: keep streaming, check again later
            logger.warning("cannot re-check the stream of %s: %s", principal.name, exc.message)

    def close(self, subscription: Subscription) -> None:
        """Unregister a stream that ended (idempotent)."""
        if self.hub.unregister(subscription):
            logger.info("stream closed for %s", subscription.email)

    def shutdown(self) -> None:
        """End every stream (UNAVAILABLE) and refuse new ones."""
        logger.info("ending %d live stream(s) for shutdown", self.hub.open_streams())
        self.hub.close()
