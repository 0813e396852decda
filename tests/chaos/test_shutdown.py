"""SIGTERM of each service under load: clients see only OK or UNAVAILABLE, never CANCELLED;
each exits within its grace period and resumes after a restart; nothing lost (R13)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest

from tests.helpers.chaos.run import ChaosRun
from tests.helpers.chaos.streams import end_codes
from tests.helpers.grpc_clients import NOT_SERVING, SERVING, health_watch, next_status

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos, pytest.mark.chaos_deep]

SERVICES = ("user", "message", "notification", "frontend")


async def test_sigterm_each_service_under_load(chaos: ChaosRun) -> None:
    await chaos.setup(users=6)
    grace = float(chaos.system.env()["SHUTDOWN_GRACE"])
    stop = asyncio.Event()
    load = chaos.workload.start(100_000, rate=50.0, concurrency=20, stop=stop)
    exits: dict[str, float] = {}
    codes: dict[str, int] = {}
    resumed: dict[str, float] = {}
    flipped: dict[str, bool] = {}
    for name in SERVICES:
        await asyncio.sleep(2)
        exits[name], flipped[name] = await _terminate_watching_health(chaos, name)
        chaos.system.start(name)
        started = time.monotonic()
        await chaos.system.wait_healthy(name, within=30)
        resumed[name] = time.monotonic() - started
        await asyncio.sleep(1)
    chaos.heal()
    await asyncio.sleep(2)
    stop.set()
    await load
    result = await chaos.check()
    codes = chaos.history.codes()
    streams = end_codes(chaos.streams)
    result.figures["exit after SIGTERM"] = ", ".join(f"{k} {v:.2f}s" for k, v in exits.items())
    result.figures["SERVING after restart"] = ", ".join(f"{k} {v:.2f}s" for k, v in resumed.items())
    result.figures["stream connections ended by"] = str(streams)
    result.figures["health NOT_SERVING before exit"] = str(flipped)
    result.figures["health Watch ended by"] = str(watch_ends)
    result.require(set(codes) <= {"OK", "UNAVAILABLE"}, "sends answered only OK or UNAVAILABLE")
    result.require(
        set(streams) <= {"UNAVAILABLE"}, "streams ended only with UNAVAILABLE (never CANCELLED)"
    )
    result.require(
        all(seconds <= grace + 1 for seconds in exits.values()),
        f"each service exits within its grace period ({grace:g} s) + 1 s",
    )
    result.require(all(s <= 10 for s in resumed.values()), "each SERVING within 10 s")
    result.require(all(flipped.values()), "health flips to NOT_SERVING before the service exits")
    chaos.finish(result)


watch_ends: dict[str, str] = {}


async def _terminate_watching_health(chaos: ChaosRun, name: str) -> tuple[float, bool]:
    """SIGTERM ``name`` while watching its health; (seconds to exit, NOT_SERVING was sent)."""
    statuses: list[int] = []
    async with grpc.aio.insecure_channel(chaos.system.grpc_addr(name)) as channel:
        watch = health_watch(channel)
        assert await next_status(watch) == SERVING

        async def follow() -> None:
            try:
                while True:
                    statuses.append(await next_status(watch))
            except grpc.aio.AioRpcError as exc:
                watch_ends[name] = exc.code().name
            except AssertionError:
                watch_ends[name] = "OK"

        follower = asyncio.create_task(follow())
        exited = await chaos.system.terminate(name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follower, 5)
        watch.cancel()
    return exited, NOT_SERVING in statuses
