"""The watch loop's own logic: dedupe across reconnects, backoff, renewal, closing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime

import missive_client as mc
import pytest
from missive_client._wire import SeenIds

NOW = datetime(2025, 1, 14, 12, tzinfo=UTC)


def note(nid: str) -> mc.Notification:
    return mc.Notification(nid, int(nid), "ada@example.com", "bob@example.com", NOW, False)


class ScriptedCall:
    """One 'connection': yields its notifications, then ends with ``error`` (or blocks)."""

    def __init__(self, ids: list[str], error: mc.MissiveError | None, block: bool = False):
        self.ids = ids
        self.error = error
        self.block = block
        self.cancelled = threading.Event()

    def __iter__(self) -> Iterator[mc.Notification]:
        for nid in self.ids:
            yield note(nid)
        if self.block:
            self.cancelled.wait(10)
            raise mc.ServerError("cancelled")
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        self.cancelled.set()


def stream_of(
    calls: list[ScriptedCall], renew: bool = False, reconnect: bool = True
) -> tuple[mc.NotificationStream, list[tuple[str | None, float]]]:
    waits: list[tuple[str | None, float]] = []
    script = iter(calls)

    def on_reconnect(error: mc.MissiveError | None, wait: float) -> None:
        waits.append((type(error).__name__ if error else None, wait))

    stream = mc.NotificationStream(
        lambda: next(script), lambda: renew, reconnect=reconnect, on_reconnect=on_reconnect
    )
    return stream, waits


def test_replayed_ids_are_not_yielded_again_after_a_reconnect() -> None:
    calls = [
        ScriptedCall(["1", "2"], mc.Unavailable("shutting down")),
        ScriptedCall(["1", "2", "3"], mc.RateLimited("busy", retry_after=0.01)),
        ScriptedCall(["2", "3", "4"], None, block=True),
    ]
    stream, waits = stream_of(calls)
    with stream:
        got = [next(stream).id for _ in range(4)]
    assert got == ["1", "2", "3", "4"]
    assert waits[0][0] == "Unavailable" and waits[0][1] <= 0.25
    assert waits[1] == ("RateLimited", 0.01)  # the server's retry-after is honoured


def test_close_from_another_thread_ends_a_blocked_iteration() -> None:
    call = ScriptedCall(["1"], None, block=True)
    stream, _ = stream_of([call])
    assert next(stream).id == "1"
    threading.Timer(0.1, stream.close).start()
    with pytest.raises(StopIteration):
        next(stream)
    assert call.cancelled.is_set()


def test_terminal_errors_are_raised_not_retried() -> None:
    stream, waits = stream_of([ScriptedCall([], mc.PermissionDenied("not yours"))])
    with pytest.raises(mc.PermissionDenied, match="not yours"):
        next(stream)
    assert waits == []


def test_unauthenticated_renews_once_when_possible() -> None:
    calls = [
        ScriptedCall([], mc.Unauthenticated("expired")),
        ScriptedCall(["9"], None, block=True),
    ]
    stream, _ = stream_of(calls, renew=True)
    with stream:
        assert next(stream).id == "9"
    stream, _ = stream_of([ScriptedCall([], mc.Unauthenticated("expired"))], renew=False)
    with pytest.raises(mc.Unauthenticated):
        next(stream)


def test_without_reconnect_an_outage_is_raised() -> None:
    stream, _ = stream_of([ScriptedCall(["1"], mc.Unavailable("gone"))], reconnect=False)
    assert next(stream).id == "1"
    with pytest.raises(mc.Unavailable):
        next(stream)


async def test_async_stream_dedupes_across_reconnects_and_closes() -> None:
    script = iter([["1", "2"], ["2", "3"], ["3", "4"]])

    async def open_stream() -> AsyncGenerator[mc.Notification, None]:
        ids = next(script)
        for nid in ids:
            yield note(nid)
        if ids[-1] == "4":
            await asyncio.sleep(10)
        raise mc.Unavailable("restarting")

    async def renew() -> bool:
        return False

    stream = mc.AsyncNotificationStream(open_stream, renew, reconnect=True, on_reconnect=None)
    async with stream:
        got = [(await anext(stream)).id for _ in range(4)]
    assert got == ["1", "2", "3", "4"]


def test_seen_ids_are_bounded() -> None:
    seen = SeenIds(limit=3)
    assert all(seen.add(str(n)) for n in range(5))
    assert len(seen) == 3
    assert not seen.add("4") and seen.add("0")  # the oldest were forgotten
