"""Catch-up rate of both relay hops, on the real system: ``python -m tests.perf.catchup``.

Starts Valkey and the four services as processes (as the e2e tests do), stops NotificationService
and FrontendService, sends ``--count`` messages to ``--receivers`` users, then:

1. starts NotificationService and times how fast the `outbox:notifications` backlog becomes
   stored notifications (MessageService's relay, hop 1);
2. starts FrontendService and times how fast the `outbox:frontend` backlog is pushed
   (NotificationService's relay, hop 2).

Prints, for each hop, the drain rate in notifications/s (backlog size / time from the first to
the last notification stored or pushed), and how long after the restart (process start) the
first and the last arrived; the first includes the process start-up and the sending channel's
reconnect delay.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import redis.asyncio

from tests.helpers.clients import PASSWORD, Stubs, User, register_and_login
from tests.helpers.system import System

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
            await stubs.send(senders[n % len(senders)], receiver, f"m{n}", request_id=f"r{n}")
            sent += 1

    await asyncio.gather(*(worker() for _ in range(16)))
    return sent


async def _register(system: System, n: int) -> User:
    """A receiver: registered (SendMessage checks it exists), never signed in."""
    email = f"receiver-{n}@example.com"
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


async def measure(base: Path, count: int, receivers_n: int) -> dict[str, float]:
    system = System.create(base, NOTIFICATION_RETENTION="100000")
    try:
        system.start()
        await system.wait_healthy()
        stubs = Stubs.connect(system)
        senders = [await register_and_login(system, f"Sender{i}") for i in range(2)]
        receivers = [await _register(system, i) for i in range(receivers_n)]
        system.stop("notification", "frontend")
        started = time.monotonic()
        sent = await _send(stubs, senders, receivers, count)
        send_s = time.monotonic() - started
        await stubs.close()
        notifications = redis.asyncio.Redis.from_url(
            system.valkey.url, db=NOTIFICATION_DB, decode_responses=True
        )
        try:

            async def stored() -> int:
                async with notifications.pipeline(transaction=False) as pipe:
                    for receiver in receivers:
                        pipe.llen(f"notifications:{receiver.email}")
                    return sum(await pipe.execute())

            async def pushed() -> int:
                [group] = await notifications.xinfo_groups("outbox:frontend")
                return sent - int(group["pending"]) - int(group["lag"] or 0)

            system.start("notification")
            hop1, hop1_first = await _timed(stored, sent, within=300)
            system.start("frontend")
            hop2, hop2_first = await _timed(pushed, sent, within=300)
            dead = await notifications.xlen("outbox:frontend:dead")
            async with redis.asyncio.Redis.from_url(system.valkey.url, db=1) as messages:
                dead += await messages.xlen("outbox:notifications:dead")
        finally:
            await notifications.aclose()

        return {
            "sent": sent,
            "send_per_s": sent / send_s,
            "hop1_s": hop1,
            "hop1_first_s": hop1_first,
            "hop1_per_s": sent / max(hop1 - hop1_first, 1e-3),
            "hop2_s": hop2,
            "hop2_first_s": hop2_first,
            "hop2_per_s": sent / max(hop2 - hop2_first, 1e-3),
            "dead_letters": dead,
        }
    finally:
        system.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000, help="messages in the backlog")
    parser.add_argument("--receivers", type=int, default=20, help="distinct receivers")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="missive-catchup-") as tmp:
        result = asyncio.run(measure(Path(tmp), args.count, args.receivers))
    first1, first2 = result["hop1_first_s"], result["hop2_first_s"]
    print(
        f"backlog {result['sent']:.0f} notifications for {args.receivers} receivers "
        f"(sent at {result['send_per_s']:.0f}/s)\n"
        f"hop 1 MessageService -> NotificationService: {result['hop1_per_s']:.0f} notifications/s "
        f"(first stored {first1:.2f}s after the restart, all after {result['hop1_s']:.2f}s)\n"
        f"hop 2 NotificationService -> FrontendService: {result['hop2_per_s']:.0f} notifications/s "
        f"(first pushed {first2:.2f}s after the restart, all after {result['hop2_s']:.2f}s)\n"
        f"dead letters: {result['dead_letters']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
