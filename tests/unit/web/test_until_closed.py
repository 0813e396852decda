"""until_closed: a browser stream's events until they end, the browser leaves or the process
drains, and in each case the upstream generator finished (its ``finally`` run) before it
returns - a stream left suspended would hold its upstream stream and its count until the
garbage collector found it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from services.web.live import until_closed


class Upstream:
    """A bridge-like generator: yields what is put in its queue; records how it ended."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.finished = False
        self.cancelled = False

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        try:
            while (data := await self.queue.get()) is not None:
                yield ServerSentEvent(data=data)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.finished = True


async def _consume(
    events: AsyncIterator[ServerSentEvent], into: list[str], got: asyncio.Event | None = None
) -> None:
    async for event in events:
        into.append(str(event.data))
        if got is not None:
            got.set()


async def test_events_pass_through_until_the_upstream_ends() -> None:
    upstream, seen = Upstream(), list[str]()
    for data in ("a", "b", None):
        upstream.queue.put_nowait(data)
    await asyncio.wait_for(_consume(until_closed(upstream.events(), asyncio.Event()), seen), 5)
    assert seen == ["a", "b"]
    assert upstream.finished


async def test_closing_ends_it_and_finishes_the_upstream() -> None:
    upstream, seen, closing, got = Upstream(), list[str](), asyncio.Event(), asyncio.Event()
    upstream.queue.put_nowait("a")
    consumer = asyncio.create_task(_consume(until_closed(upstream.events(), closing), seen, got))
    await asyncio.wait_for(got.wait(), 5)
    closing.set()
    await asyncio.wait_for(consumer, 5)
    assert seen == ["a"]
    assert upstream.cancelled and upstream.finished


async def test_a_browser_that_leaves_finishes_the_upstream_before_it_returns() -> None:
    # The browser left while the upstream waited for its next event: the server cancels the
    # task iterating the response. The upstream must be finished once that task is done.
    upstream, seen, got = Upstream(), list[str](), asyncio.Event()
    upstream.queue.put_nowait("a")
    consumer = asyncio.create_task(
        _consume(until_closed(upstream.events(), asyncio.Event()), seen, got)
    )
    await asyncio.wait_for(got.wait(), 5)
    await asyncio.sleep(0)  # the upstream is now waiting for its next event
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    assert consumer.cancelled()
    assert upstream.cancelled and upstream.finished
