"""What one live notification on the fan-out bus costs the FrontendService replicas that read
it, and Valkey: ``python -m tests.perf.fanout_cost``.

Every FrontendService replica subscribes to every shard channel, so each notification pushed to
any replica is read, decoded and looked up by every other one, whether or not it holds a stream
of the receiver, and Valkey writes it to every replica. This measures both per notification:
an embedded Valkey; in this process a FrontendService (a real
:class:`~services.frontend.fanout.Bus` and hub) holding ``--streams`` idle streams of other
users; ``--listeners`` more subscribers of every shard channel in a separate process (the
other replicas, as Valkey sees them); and a publisher process that publishes ``--count``
notifications of users with no stream here, in pipelines of 100. Prints the CPU (user +
system) of this process per notification read and Valkey's per notification published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from services.common.domain import Principal
from services.common.redis import create_redis
from services.frontend.fanout import CHANNEL_PREFIX, SHARDS, Bus, _encoded, channel_of
from services.frontend.hub import Hub
from services.frontend.service import FrontendService
from services.notification.models import Notification
from tests.bench.procs import cpu_seconds
from tests.helpers.system import ROOT
from tests.helpers.valkey import start_valkey

PUBLISHER = textwrap.dedent(
    """
    import sys, redis
    url, path = sys.argv[1], sys.argv[2]
    items = [line.rstrip("\\n").split("\\t", 1) for line in open(path, encoding="utf-8")]
    with redis.Redis.from_url(url) as client:
        for start in range(0, len(items), 100):
            with client.pipeline(transaction=False) as pipe:
                for channel, payload in items[start : start + 100]:
                    pipe.publish(channel, payload)
                pipe.execute()
    """
)
LISTENERS = textwrap.dedent(
    """
    import asyncio, sys, redis.asyncio
    url, count, listeners, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

    async def listen(ready):
        async with redis.asyncio.Redis.from_url(url) as client:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(*channels)
                read = 0
                while read < count:
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message["type"] == "subscribe":
                        ready.release()
                    elif message and message["type"] == "message":
                        read += 1

    async def main():
        ready = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(listen(ready)) for _ in range(listeners)]
        for _ in range(listeners * len(channels)):
            await ready.acquire()
        print("subscribed", flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    """
)


class NoUnread:
    async def list_unread(self, email: str, account_id: str = "") -> list[Notification]:
        return []


def _payloads(count: int, path: Path) -> None:
    sent_at = datetime(2026, 1, 1, tzinfo=UTC)
    lines = []
    for n in range(count):
        receiver = f"elsewhere{n % 1000}@example.com"
        note = Notification(
            str(n + 1), n + 1, "ada@example.com", receiver, sent_at, False,
            "Hello! Are we still on for lunch tomorrow at noon?", "Ada",
        )  # fmt: skip
        lines.append(f"{channel_of(receiver)}\t{_encoded('another-replica', note, '')}\n")
    path.write_text("".join(lines), encoding="utf-8")


async def measure(
    url: str, valkey_pid: int, count: int, streams: int, listeners: int, base: Path
) -> dict[str, float]:
    redis = create_redis(url, 0)
    bus = Bus(redis)
    hub = Hub(max_streams=streams + 1, max_streams_per_client=streams + 1)
    service = FrontendService(NoUnread(), hub, bus=bus)
    shown = 0
    show = bus._show
    assert show is not None

    def counting(notification: Notification, account_id: str) -> int:
        nonlocal shown
        shown += 1
        return show(notification, account_id)

    bus._show = counting
    task = asyncio.create_task(bus.run())
    others = None
    try:
        assert await bus.wait_up(10), "the bus did not come up"
        held = [
            service.open(Principal(kind="user", name=email, account_id=""), email)
            for email in (f"holder{n}@example.com" for n in range(streams))
        ]
        payloads = base / "payloads.tsv"
        _payloads(count, payloads)
        if listeners:
            channels = [f"{CHANNEL_PREFIX}{{{n}}}" for n in range(SHARDS)]
            others = await asyncio.create_subprocess_exec(
                sys.executable, "-c", LISTENERS, url, str(count), str(listeners),
                *channels, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert others.stdout is not None
            assert (await others.stdout.readline()).strip() == b"subscribed"
        cpu, wall, valkey = time.process_time(), time.perf_counter(), cpu_seconds(valkey_pid)
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, url, str(payloads), cwd=ROOT
        )
        while shown < count:
            if publisher.returncode not in (None, 0):
                raise RuntimeError("the publisher failed")
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        await publisher.wait()
        if others is not None:
            await asyncio.wait_for(others.wait(), 300)
        valkey = cpu_seconds(valkey_pid) - valkey
        for subscription in held:
            service.close(subscription)
    finally:
        if others is not None and others.returncode is None:
            others.kill()
            await others.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await redis.aclose()
    return {
        "replica_us": cpu / count * 1e6,
        "read_per_s": count / wall,
        "valkey_us": valkey / count * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="notifications (20,000)")
    parser.add_argument("--streams", type=int, default=1_000, help="idle streams held (1,000)")
    parser.add_argument(
        "--listeners", type=int, default=0, help="more subscribers of every channel (0)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="missive-fanout-") as tmp:
        valkey = start_valkey(Path(tmp) / "valkey")
        try:
            assert valkey.pid is not None
            result = asyncio.run(
                measure(valkey.url, valkey.pid, args.count, args.streams, args.listeners, Path(tmp))
            )
        finally:
            valkey.stop()
    print(
        f"{args.count} notifications, {1 + args.listeners} subscriber(s) of every channel, the "
        f"measured one holding {args.streams} other streams: {result['replica_us']:.1f} µs "
        f"CPU each in the replica ({result['read_per_s']:,.0f} read per second), "
        f"{result['valkey_us']:.1f} µs in Valkey per notification published"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
