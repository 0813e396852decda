"""Bench scenario 8: what an open live stream costs FrontendService (and Valkey).

Opens ``--streams`` SubscribeNotifications streams (default 2,000), each on its own connection
as that many clients would, for users with 10 streams each (FrontendService's per-account
limit), 200 a second, and holds them idle. Measured: FrontendService's resident memory and
Valkey's ``used_memory`` before and once every stream is registered (FrontendService's
``missive_frontend_live_streams`` gauge), each divided by the streams opened, and the CPU each
process spent per stream opened (each opening checks the token and replays the account's
unread notifications: none here).
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import redis.asyncio
from missive.frontend.v1 import frontend_pb2

from tests.bench import procs
from tests.bench.figures import figure
from tests.bench.run import Bench
from tests.helpers.clients import User, register_and_login
from tests.helpers.replicas import scrape

PER_USER = 10
"""Streams per account: FrontendService's default FRONTEND_MAX_STREAMS_PER_USER."""
GAUGE = "missive_frontend_live_streams"
OPEN_RATE = 200.0
"""Streams opened a second: paced, as reconnecting clients back off (thousands at once on
a shared two-core machine time out their replays)."""
STALLED = 15.0
"""Seconds without one more stream registered after which the scenario stops waiting."""


async def _users(bench: Bench, count: int) -> list[User]:
    slots = asyncio.Semaphore(8)

    async def one(n: int) -> User:
        async with slots:
            return await register_and_login(bench.system, f"Listener{n}")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _open_streams(bench: Bench) -> float:
    samples = await scrape(bench.system.metrics_url("frontend"))
    return sum(v for (name, _), v in samples.items() if name == GAUGE)


async def _used_memory(url: str) -> int:
    async with redis.asyncio.Redis.from_url(url) as client:
        info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


async def streams(bench: Bench) -> None:
    count = bench.options.streams
    users = await _users(bench, -(-count // PER_USER))
    specs = [
        {
            "body": base64.b64encode(
                frontend_pb2.SubscribeNotificationsRequest(email=u.email).SerializeToString()
            ).decode(),
            "metadata": [list(pair) for pair in u.metadata],
        }
        for u in (users[n // PER_USER] for n in range(count))
    ]
    system = bench.system
    frontend_pid = bench.pids()["frontend"]
    already = await _open_streams(bench)
    await asyncio.sleep(0.5)  # let the registrations' work settle before the baseline
    rss_before = procs.rss_bytes(frontend_pid)
    valkey_before = await _used_memory(system.valkey.url)
    pids = bench.pids()
    cpu_before = procs.cpu_snapshot(pids)
    hold = 3600.0  # at most: the scenario ends the loader once it measured
    loader = procs.Loader(
        {"kind": "hold", "frontend": system.grpc_addr("frontend"), "streams": specs}
        | {"hold": hold, "duration": hold, "open_rate": OPEN_RATE}
    )
    started = progressed = time.monotonic()
    open_now = already
    try:
        await loader.start()
        while open_now < already + count:
            await asyncio.sleep(0.1)
            assert loader.process is not None
            if loader.process.returncode is not None:
                raise RuntimeError("the stream loader exited early")
            now = await _open_streams(bench)
            if now > open_now:
                open_now, progressed = now, time.monotonic()
            elif time.monotonic() - progressed > STALLED:
                break  # some streams were refused or ended: the loader says why
        opened_s = time.monotonic() - started
        cpu = procs.cpu_delta(cpu_before, pids)
        await asyncio.sleep(1.0)
        rss_after = procs.rss_bytes(frontend_pid)
        valkey_after = await _used_memory(system.valkey.url)
        assert loader.process is not None
        loader.process.terminate()
        result = await loader.result()
    finally:
        await loader.close()
    bench.details["streams"] = {
        **result,
        "streams": count,
        "users": len(users),
        "open_s": opened_s,
        "frontend_rss_before": rss_before,
        "frontend_rss_after": rss_after,
        "valkey_used_memory_before": valkey_before,
        "valkey_used_memory_after": valkey_after,
        "cpu_s": cpu,
    }
    if result["errors"] or open_now < already + count:
        raise RuntimeError(
            f"{open_now - already:.0f}/{count} streams registered; ended early: "
            f"{result['ended_early']}"
        )
    bench.add(
        figure(
            "8 streams",
            f"FrontendService memory per open live stream ({count} open, one connection each)",
            (rss_after - rss_before) / count / 1024,
            "KiB",
        ),
        figure(
            "8 streams",
            "Valkey memory per open live stream",
            (valkey_after - valkey_before) / count,
            "B",
        ),
        figure(
            "8 streams",
            "streams reopened while opening (ended with UNAVAILABLE, as under load)",
            result["reopened"],
            "",
        ),
    )
    for name, seconds in cpu.items():
        bench.add(
            figure("8 streams", f"CPU per stream opened: {name}", seconds / count * 1e6, "µs")
        )
