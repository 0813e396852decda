"""UserService down: past the account cache's lifetime, SendMessage fails fast with UNAVAILABLE
and stores nothing."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.common.sessions import DEFAULT_TTL_SECONDS
from tests.helpers.chaos.run import ChaosRun, deep

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos]

FAST_FAILURE_SECONDS = 1.0
CACHE_SECONDS = DEFAULT_TTL_SECONDS  # MessageService's account cache


async def test_user_service_down(chaos: ChaosRun) -> None:
    """Sends while UserService is SIGKILLed. MessageService's account cache may still accept
    sends between accounts it checked less than its lifetime ago (real sends, checked like any
    other); past that, each send is UNAVAILABLE within 1 s with nothing stored (no message, no
    notification, DB 1 unchanged); sends succeed within 10 s of UserService's restart."""
    ops = 100 if deep() else 30
    await chaos.setup(users=4)
    chaos.system.kill("user")
    down_at = time.monotonic()
    await chaos.workload.run(10, rate=20.0, concurrency=4)  # within the cache's lifetime
    await asyncio.sleep(max(0.0, down_at + CACHE_SECONDS + 0.5 - time.monotonic()))
    before = await chaos.reader.snapshot()
    uncached_at = time.monotonic()
    await chaos.workload.run(ops, rate=20.0, concurrency=4)
    during = chaos.history.attempts_between(uncached_at, time.monotonic())
    after_outage = await chaos.reader.snapshot()
    chaos.system.start("user")
    await chaos.system.wait_healthy("user")
    restarted = time.monotonic()
    first_ok = None
    while time.monotonic() - restarted < 15:
        op = await chaos.workload.send()
        if op.outcome is not None and op.code == "OK":
            first_ok = time.monotonic() - restarted
            break
        await asyncio.sleep(0.2)
    chaos.heal()
    await chaos.workload.run(20, rate=20.0, concurrency=4)
    result = await chaos.check()
    slowest = max((a.latency for a in during), default=0.0)
    codes = sorted({a.code for a in during})
    result.figures["sends during the outage, past the cache's lifetime"] = (
        f"{len(during)}: {codes}, slowest {slowest * 1000:.0f} ms"
    )
    result.figures["first OK after the restart"] = (
        f"{first_ok:.2f} s" if first_ok is not None else "none"
    )
    result.require(codes == ["UNAVAILABLE"], "every send past the cache's lifetime is UNAVAILABLE")
    result.require(slowest < FAST_FAILURE_SECONDS, f"each fails within {FAST_FAILURE_SECONDS:g} s")
    result.require(
        after_outage.dbsize[1] == before.dbsize[1]
        and len(after_outage.messages) == len(before.messages),
        "nothing stored while UserService is down",
    )
    result.require(result.check.recovered == 0, "no failed send was stored later")
    result.require(first_ok is not None and first_ok <= 10, "sends succeed within 10 s")
    chaos.finish(result)
