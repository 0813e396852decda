"""Catch-up rate of both relay hops on a running system (bench scenario 5).

Stops NotificationService and FrontendService, sends ``count`` messages to ``receivers`` fresh
users, then:

1. starts NotificationService and times how fast the `outbox:notifications` backlog becomes
   stored notifications (MessageService's relay, hop 1);
2. starts FrontendService and times how fast the `outbox:frontend` backlog is pushed
   (NotificationService's relay, hop 2).

For each hop: the drain rate in notifications/s (backlog size / time from the first to the last
notification stored or pushed), and how long after the restart (process start) the first and
the last arrived; the first includes the process start-up and the sending channel's reconnect
delay. ``python -m tests.perf.catchup`` runs this alone on a system of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis.asyncio

from tests.helpers.clients import PASSWORD, Stubs, User
from tests.helpers.system import System

MESSAGE_DB = 1
NOTIFICATION_DB = 2


async def _send(stubs: Stubs, senders: list[User], receivers: list[User], count: int) -> int:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while not queue.empty():
            n = queue.get_nowait()
            receiver = receivers[n % len(receivers)]
            await stubs.send(senders[n % len(senders)], receiver, f"m{n}")
            sent += 1

    await asyncio.gather(*(worker() for _ in range(16)))
    return sent


async def register_receiver(system: System, n: int) -> User:
    """A receiver: registered (SendMessage checks it exists), never signed in."""
    email = f"receiver-{n}-{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=10) as http:
        created = await http.post(
            "/users", json={"name": f"Receiver {n}", "email": email, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text
    return User(email, "")


async def _timed(
    done: Callable[[], Awaitable[int]], total: int, within: float
) -> tuple[float, float]:
    """Seconds from now until done() reaches total, and until it first moved."""
    started = time.monotonic()
    first = -1.0
    while True:
        value = await done()
        now = time.monotonic() - started
        if value and first < 0:
            first = now
        if value >= total:
            return now, first
        if now > within:
            raise AssertionError(f"only {value}/{total} after {within:.0f}s")
        await asyncio.sleep(0.005)


async def backlog(client: redis.asyncio.Redis, stream: str) -> int:
    """Entries of ``stream`` its consumer groups have not acknowledged (pending + not read)."""
    total = 0
    groups: list[dict[str, Any]] = await client.xinfo_groups(stream)
    for group in groups:
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell after some deletions: count what follows the cursor
            following = await client.xrange(stream, f"({group['last-delivered-id']}", "+")
            lag = len(following or [])
        total += int(group["pending"]) + int(lag)
    return total


async def catch_up(
    system: System, senders: list[User], receivers: list[User], count: int
) -> dict[str, float]:
    """Run the scenario on ``system`` (all four services running); every service runs after."""
    stubs = Stubs.connect(system)
    notifications = redis.asyncio.Redis.from_url(
        system.valkey.url, db=NOTIFICATION_DB, decode_responses=True
    )
    try:
        system.stop("notification", "frontend")
        started = time.monotonic()
        sent = await _send(stubs, senders, receivers, count)
        send_s = time.monotonic() - started

        async def lengths() -> int:
            async with notifications.pipeline(transaction=False) as pipe:
                for receiver in receivers:
                    pipe.llen(f"notifications:{receiver.email}")
                return sum(int(n) for n in await pipe.execute())

        already = await lengths()

        async def stored() -> int:
            return await lengths() - already

        system.start("notification")
        hop1, hop1_first = await _timed(stored, sent, within=300)
        waiting = await backlog(notifications, "outbox:frontend")

        async def pushed() -> int:
            return waiting - await backlog(notifications, "outbox:frontend")

        system.start("frontend")
        hop2, hop2_first = await _timed(pushed, waiting, within=300)
        dead = int(await notifications.xlen("outbox:frontend:dead"))
        async with redis.asyncio.Redis.from_url(system.valkey.url, db=MESSAGE_DB) as messages:
            dead += int(await messages.xlen("outbox:notifications:dead"))
        await system.wait_healthy()
    finally:
        await notifications.aclose()
        await stubs.close()
    return {
        "sent": sent,
        "send_per_s": sent / send_s,
        "hop1_s": hop1,
        "hop1_first_s": hop1_first,
        "hop1_per_s": sent / max(hop1 - hop1_first, 1e-3),
        "hop2_s": hop2,
        "hop2_first_s": hop2_first,
        "hop2_per_s": waiting / max(hop2 - hop2_first, 1e-3),
        "dead_letters": dead,
    }
