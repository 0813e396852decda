"""FrontendService domain: the hub's bounds, overflow, shutdown and the replay/live hand-over."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from services.common.domain import (
    InvalidArgument,
    PermissionDenied,
    Principal,
    RateLimited,
    Unavailable,
)
from services.frontend.errors import StreamReplaced
from services.frontend.hub import Hub, Subscription
from services.frontend.service import FrontendService
from services.frontend.settings import Settings
from services.notification.models import Notification

BOB = "bob@example.com"
ADA = "ada@example.com"


SENT_AT = datetime(2025, 1, 14, 12, 0, tzinfo=UTC)


def note(nid: int, receiver: str = BOB, read: bool = False) -> Notification:
    return Notification(str(nid), nid, ADA, receiver, SENT_AT, read)


class ListSource:
    """Unread notifications from a list (newest first); optionally held until released."""

    def __init__(self, newest_first: Sequence[Notification]) -> None:
        self.items = list(newest_first)
        self.release = asyncio.Event()
        self.release.set()
        self.fetched = asyncio.Event()

    async def list_unread(self, email: str, account_id: str = "") -> list[Notification]:
        self.fetched.set()
        await self.release.wait()
        return [n for n in self.items if n.receiver_email == email]


def test_overflow_ends_the_stream_and_frees_its_slot() -> None:
    hub = Hub(queue_size=2)
    subscription = hub.register(BOB)
    assert [hub.publish(note(1)), hub.publish(note(2))] == [1, 1]
    assert hub.publish(note(3)) == 0
    assert subscription.closed
    assert hub.open_streams() == 0
    assert hub.publish(note(4)) == 0


async def test_an_overflowed_stream_raises_unavailable_even_with_items_queued() -> None:
    service = FrontendService(ListSource([note(1)]), Hub(queue_size=1))
    subscription = service.open(Principal("user", BOB), BOB)
    stream = service.stream(subscription)
    assert await anext(stream) == note(1)
    service.receive(note(2))
    service.receive(note(3))  # the consumer did not keep up
    with pytest.raises(Unavailable, match="reconnect"):
        await anext(stream)
    assert service.hub.open_streams() == 0


async def test_pushes_during_the_replay_fetch_are_sent_once_after_it() -> None:
    source = ListSource([note(2), note(1)])
    source.release.clear()
    service = FrontendService(source)
    subscription = service.open(Principal("user", BOB), BOB)
    stream = service.stream(subscription)

    async def next_item() -> Notification:
        return await anext(stream)

    first = asyncio.create_task(next_item())
    await source.fetched.wait()
    # Registered before the fetch: a push racing it is queued, not lost, and not doubled.
    assert service.receive(note(2)) == 1
    assert service.receive(note(3)) == 1
    source.release.set()
    seen = [await first, await anext(stream), await anext(stream)]
    assert seen == [note(1), note(2), note(3)]
    assert service.receive(note(1)) == 0
    await stream.aclose()
    assert service.hub.open_streams() == 0


async def test_read_notifications_in_the_replay_are_skipped() -> None:
    service = FrontendService(ListSource([note(2, read=True), note(1)]))
    stream = service.stream(service.open(Principal("user", BOB), BOB))
    assert await anext(stream) == note(1)
    assert service.receive(note(3)) == 1
    assert await anext(stream) == note(3)
    await stream.aclose()


def test_stream_caps_per_user_and_per_process() -> None:
    # An account at its cap keeps its newest streams (the longest idle one ends); the process
    # and each client host refuse beyond theirs.
    hub = Hub(max_streams=3, max_streams_per_user=2)
    first, second = hub.register(BOB), hub.register(BOB)
    third = hub.register(BOB)
    assert first.closed and not second.closed and not third.closed
    assert hub.open_streams(BOB) == 2
    hub.register(ADA)
    with pytest.raises(RateLimited, match="retry later") as error:
        hub.register("cy@example.com")
    assert error.value.retry_after == 5
    assert hub.open_streams() == 3


def test_a_hub_from_settings_takes_their_stream_limits() -> None:
    limits = Settings(max_streams=3, max_streams_per_user=2, max_streams_per_client=1)
    hub = Hub.from_settings(limits)
    first = hub.register(BOB, "198.51.100.1")
    with pytest.raises(RateLimited, match="from one client"):
        hub.register(ADA, "198.51.100.1")
    hub.register(BOB, "198.51.100.2")
    hub.register(BOB, "198.51.100.3")
    assert first.closed  # the account's third stream replaced its longest idle one
    hub.register(ADA, "198.51.100.4")
    with pytest.raises(RateLimited, match="retry later"):
        hub.register(ADA, "198.51.100.5")


async def test_the_longest_idle_stream_of_an_account_is_replaced() -> None:
    hub = Hub(max_streams_per_user=2)
    quiet, busy = hub.register(BOB), hub.register(BOB)
    await asyncio.sleep(0.01)
    assert hub.publish(note(1)) == 2  # both take it: both active now...
    await asyncio.sleep(0.01)
    busy.offer(note(2))  # ...and busy once more, later
    hub.register(BOB)
    assert quiet.closed and not busy.closed
    with pytest.raises(StreamReplaced, match="more than 2 streams") as ended:
        await quiet.next()
    assert ended.value.code == "ABORTED"


def test_streams_per_client_host_are_capped() -> None:
    hub = Hub(max_streams_per_client=2)
    hub.register(BOB, "198.51.100.1")
    held = hub.register(ADA, "198.51.100.1")
    with pytest.raises(RateLimited, match="from one client"):
        hub.register("cy@example.com", "198.51.100.1")
    hub.register("cy@example.com", "198.51.100.2")
    hub.unregister(held)
    hub.register("cy@example.com", "198.51.100.1")
    assert hub.open_streams() == 3


async def test_close_ends_every_stream_and_refuses_new_ones() -> None:
    hub = Hub()
    subscription = hub.register(BOB)
    waiting = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    hub.close()
    with pytest.raises(Unavailable, match="shutting down"):
        await waiting
    with pytest.raises(Unavailable):
        hub.register(BOB)


def test_unregister_is_idempotent() -> None:
    hub = Hub()
    subscription = hub.register(BOB)
    assert hub.unregister(subscription)
    assert not hub.unregister(subscription)
    assert hub.open_streams() == 0 and hub.open_streams(BOB) == 0


def test_seen_ids_are_bounded_oldest_forgotten_first() -> None:
    subscription = Subscription(BOB, queue_size=10, seen_limit=2)
    assert [subscription.claim(i) for i in ("1", "2", "1", "3")] == [True, True, False, True]
    assert subscription.claim("1"), "the oldest id was forgotten to bound memory"
    assert not subscription.claim("3")


def test_open_checks_the_email_and_the_caller() -> None:
    service = FrontendService(ListSource([]))
    with pytest.raises(InvalidArgument):
        service.open(Principal("user", BOB), "bob")
    with pytest.raises(PermissionDenied):
        service.open(Principal("user", ADA), BOB)
    assert service.hub.open_streams() == 0


def test_receive_validates_before_publishing() -> None:
    service = FrontendService(ListSource([]))
    subscription = service.hub.register(BOB)
    for bad in (None, note(1).__class__("", 1, ADA, BOB, SENT_AT, False), note(1, receiver="x")):
        with pytest.raises(InvalidArgument):
            service.receive(bad)
    assert not subscription.closed and service.receive(note(1)) == 1


async def test_a_stream_ended_during_the_replay_stops_replaying() -> None:
    service = FrontendService(ListSource([note(3), note(2), note(1)]))
    stream = service.stream(service.open(Principal("user", BOB), BOB))
    assert await anext(stream) == note(1)
    service.shutdown()
    with pytest.raises(Unavailable, match="shutting down"):
        await anext(stream)
    assert service.hub.open_streams() == 0
