"""NotificationService killed or paused mid-burst: notifications are delayed, never lost (R1, R12)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.chaos.history import Outcome, percentile
from tests.helpers.chaos.run import ChaosRun, deep

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos]


async def test_notification_service_sigkill_5s(chaos: ChaosRun) -> None:
    """R1: SIGKILL NotificationService at ~30 % of a burst, restart after 5 s."""
    ops, users, rate, clients = (1000, 10, 100.0, 20) if deep() else (200, 4, 25.0, 8)
    await chaos.setup(users=users)
    load = chaos.workload.start(ops, rate=rate, concurrency=clients)
    await chaos.workload.reached(len(chaos.history.ops) - ops + ops * 3 // 10)
    killed = time.monotonic()
    chaos.system.kill("notification")
    await asyncio.sleep(5)
    chaos.system.start("notification")
    await chaos.system.wait_healthy("notification")
    chaos.heal()
    await load
    result = await chaos.check()
    during = [
        a for a in chaos.history.attempts_between(killed, chaos.healed_at)
    ]
    result.figures["sends during the outage"] = (
        f"{len(during)}, non-OK {sum(a.code != 'OK' for a in during)}, "
        f"p99 {percentile([a.latency for a in during], 99) * 1000:.0f} ms"
    )
    result.require(all(a.code == "OK" for a in during), "SendMessage unaffected by the outage")
    result.require(
        result.drain_s is not None and result.drain_s <= 10, "delivered within 10 s of restart"
    )
    chaos.finish(result)
