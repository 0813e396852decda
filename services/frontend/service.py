"""FrontendService domain: showing pushed notifications and streaming them, after a replay of
the unread ones, on the live subscriptions of the hub (services.frontend.hub)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import Protocol

from services.common.domain import (
    InvalidArgument,
    Principal,
    Unauthenticated,
    Unavailable,
)
from services.common.emails import normalise_email
from services.common.sessions import Sessions
from services.common.tracing import span
from services.frontend.fanout import Bus
from services.frontend.hub import Hub, Subscription
from services.notification.models import Notification

logger = logging.getLogger(__name__)

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
        if logger.isEnabledFor(logging.DEBUG):  # the fields cost more than the check
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
            self.bus.require_up(email)  # it could miss notifications pushed to other replicas
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
