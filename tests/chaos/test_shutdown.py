"""SIGTERM of each service under load: clients see only OK or UNAVAILABLE, never CANCELLED;
each exits within its grace period and resumes after a restart; nothing lost (R13)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.chaos.run import ChaosRun
from tests.helpers.chaos.streams import end_codes

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos, pytest.mark.chaos_deep]

SERVICES = ("user", "message", "notification", "frontend")


async def test_sigterm_each_service_under_load(chaos: ChaosRun) -> None:
    await chaos.setup(users=6)
    grace = float(chaos.system.env()["SHUTDOWN_GRACE"])
    stop = asyncio.Event()
    load = chaos.workload.start(100_000, rate=20.0, concurrency=10, stop=stop)
    exits: dict[str, float] = {}
    codes: dict[str, int] = {}
    resumed: dict[str, float] = {}
    for name in SERVICES:
        await asyncio.sleep(2)
        exits[name] = chaos.system.terminate(name)
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
    result.require(set(codes) <= {"OK", "UNAVAILABLE"}, "sends answered only OK or UNAVAILABLE")
    result.require(
        set(streams) <= {"UNAVAILABLE"}, "streams ended only with UNAVAILABLE (never CANCELLED)"
    )
    result.require(
        all(seconds <= grace + 1 for seconds in exits.values()),
        f"each service exits within its grace period ({grace:g} s) + 1 s",
    )
    result.require(all(s <= 10 for s in resumed.values()), "each SERVING within 10 s")
    chaos.finish(result)
