"""The live notification stream: reconnects after outages and never yields an id twice.

FrontendService replays a user's unread notifications whenever a stream opens, and sends each
id at most once per stream. Across reconnects the same ids come again, so the stream object
remembers the ids it has yielded (bounded) and skips repeats.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from missive_client._errors import (
    DeadlineExceeded,
    MissiveError,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from missive_client._models import Notification
from missive_client._wire import SeenIds, backoff

if TYPE_CHECKING:
    from missive_client._async_core import AsyncCore
    from missive_client._core import SyncCore

__all__ = ["AsyncNotificationStream", "NotificationStream", "ReconnectCallback"]

ReconnectCallback = Callable[[MissiveError | None, float], None]
"""Called before each reconnection with the error that ended the stream and the wait (s)."""

_STABLE_AFTER = 10.0
"""A stream that stayed open this long resets the backoff."""
_TRANSIENT = (Unavailable, DeadlineExceeded, RateLimited)


class _LiveLike(Protocol):
    """One open call, as the sync transport returns it (``_sync_transport.LiveStream``)."""

    def __iter__(self) -> Iterator[Notification]: ...

    def cancel(self) -> None: ...


def _delay(error: MissiveError | None, attempt: int) -> float:
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return error.retry_after
    return backoff(attempt, base=0.25, cap=5.0)


class _Reconnects:
    """What one stream does after its call ended: renew the token once, wait, or give up."""

    def __init__(self, reconnect: bool, on_reconnect: ReconnectCallback | None) -> None:
        self._reconnect = reconnect
        self._on_reconnect = on_reconnect
        self._attempt = 0
        self.renewed = False
        """A renewal was tried since the last notification arrived."""

    def renewing(self, exc: MissiveError) -> bool:
        """True (once) when the call was refused as unauthenticated: renew, then call again."""
        if isinstance(exc, Unauthenticated) and not self.renewed:
            self.renewed = True
            return True
        return False

    def outage(self, exc: MissiveError) -> MissiveError:
        """``exc`` when it is an outage to reconnect after; otherwise it is raised."""
        if not isinstance(exc, _TRANSIENT):
            raise exc
        return exc

    def wait(self, error: MissiveError | None, opened: float) -> float | None:
        """Seconds to wait before the next call (announced to ``on_reconnect``), None to end.

        Without reconnection the error that ended the call is raised.
        """
        if not self._reconnect:
            if error is not None:
                raise error
            return None
        if time.monotonic() - opened > _STABLE_AFTER:
            self._attempt = 0
        wait = _delay(error, self._attempt)
        self._attempt += 1
        if self._on_reconnect is not None:
            self._on_reconnect(error, wait)
        return wait


class NotificationStream:
    """Iterator over a user's notifications as they arrive (see :meth:`Notifications.watch`).

    Use it in a ``with`` block or call :meth:`close` (from any thread) to end it.
    """

    def __init__(
        self,
        open_stream: Callable[[], _LiveLike],
        renew: Callable[[], bool],
        *,
        reconnect: bool,
        on_reconnect: ReconnectCallback | None,
    ) -> None:
        self._open = open_stream
        self._renew = renew
        self._reconnects = _Reconnects(reconnect, on_reconnect)
        self._seen = SeenIds()
        self._closed = threading.Event()
        self._live: _LiveLike | None = None
        self._items = self._run()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Notification:
        return next(self._items)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the stream; a blocked iteration returns (StopIteration). Safe from any thread."""
        self._closed.set()
        live = self._live
        if live is not None:
            live.cancel()

    def _run(self) -> Generator[Notification, None, None]:
        while not self._closed.is_set():
            error: MissiveError | None = None
            opened = time.monotonic()
            try:
                yield from self._call()
            except MissiveError as exc:
                if self._closed.is_set() or exc.code == "CANCELLED":
                    return  # closed by us, or the client was closed under the stream
                if self._reconnects.renewing(exc) and self._renew():
                    continue
                error = self._reconnects.outage(exc)
            finally:
                self._live = None
            wait = None if self._closed.is_set() else self._reconnects.wait(error, opened)
            if wait is None:
                return
            self._closed.wait(wait)

    def _call(self) -> Generator[Notification, None, None]:
        """The new notifications of one call, until it ends (or the stream is closed)."""
        self._live = self._open()
        if self._closed.is_set():
            return
        for notification in self._live:
            self._reconnects.renewed = False
            if self._seen.add(notification.id):
                yield notification


class AsyncNotificationStream:
    """Async iterator over a user's notifications as they arrive (``async for``).

    Use it in an ``async with`` block or call :meth:`aclose` to end it; cancelling the task
    that iterates also ends it.
    """

    def __init__(
        self,
        open_stream: Callable[[], AsyncGenerator[Notification, None]],
        renew: Callable[[], Awaitable[bool]],
        *,
        reconnect: bool,
        on_reconnect: ReconnectCallback | None,
    ) -> None:
        self._open = open_stream
        self._renew = renew
        self._reconnects = _Reconnects(reconnect, on_reconnect)
        self._seen = SeenIds()
        self._items = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Notification:
        return await self._items.__anext__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End the stream and its call."""
        await self._items.aclose()

    async def _run(self) -> AsyncGenerator[Notification, None]:
        while True:
            error: MissiveError | None = None
            opened = time.monotonic()
            try:
                async with aclosing(self._call()) as items:
                    async for notification in items:
                        yield notification
            except MissiveError as exc:
                if exc.code == "CANCELLED":
                    return  # the client was closed under the stream
                if self._reconnects.renewing(exc) and await self._renew():
                    continue
                error = self._reconnects.outage(exc)
            wait = self._reconnects.wait(error, opened)
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def _call(self) -> AsyncGenerator[Notification, None]:
        """The new notifications of one call, until it ends."""
        async with aclosing(self._open()) as live:
            async for notification in live:
                self._reconnects.renewed = False
                if self._seen.add(notification.id):
                    yield notification


def watch(
    core: SyncCore, email: str, *, reconnect: bool, on_reconnect: ReconnectCallback | None
) -> NotificationStream:
    """The live stream of ``email``'s notifications over ``core`` (``Notifications.watch``)."""

    def open_stream() -> _LiveLike:
        core.ensure_fresh()
        return core.transport.open_stream(email)

    def renew() -> bool:
        if not core.session.can_refresh:
            return False
        core.renew()
        return True

    return NotificationStream(open_stream, renew, reconnect=reconnect, on_reconnect=on_reconnect)


def async_watch(
    core: AsyncCore, email: str, *, reconnect: bool, on_reconnect: ReconnectCallback | None
) -> AsyncNotificationStream:
    """The live stream of ``email``'s notifications over ``core`` (``AsyncNotifications.watch``)."""

    async def open_stream() -> AsyncGenerator[Notification, None]:
        await core.ensure_fresh()
        async with aclosing(core.transport.stream(email)) as items:
            async for notification in items:
                yield notification

    async def renew() -> bool:
        if not core.session.can_refresh:
            return False
        await core.renew()
        return True

    return AsyncNotificationStream(
        open_stream, renew, reconnect=reconnect, on_reconnect=on_reconnect
    )
