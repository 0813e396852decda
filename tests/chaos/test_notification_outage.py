"""NotificationService killed or paused mid-burst: notifications delayed, never lost (R1, R12)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.chaos.history import percentile
from tests.helpers.chaos.run import NOTIFICATION_SLA_SECONDS, ChaosRun, deep, p99_budget_ms

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos]


async def _kill_mid_burst(chaos: ChaosRun, *, down: float, ops: int, rate: float) -> None:
    base = chaos.workload.completed
    load = chaos.workload.start(ops, rate=rate, concurrency=20 if deep() else 8)
    await chaos.workload.reached(base + ops * 3 // 10)
    killed = time.monotonic()
    chaos.system.kill("notification")
    await asyncio.sleep(down)
    chaos.system.start("notification")
    await chaos.system.wait_healthy("notification")
    chaos.heal()
    await load
    result = await chaos.check()
    during = chaos.history.attempts_between(killed, chaos.healed_at)
    failed = sum(a.code != "OK" for a in during)
    result.figures["sends during the outage"] = (
        f"{len(during)}, non-OK {failed}, "
        f"p99 {percentile([a.latency for a in during], 99) * 1000:.0f} ms"
    )
    result.figures["catch-up"] = chaos.catch_up(killed, result)
    result.require(failed == 0, "SendMessage unaffected by the outage (the outbox decouples it)")
    if deep():
        p99 = percentile([a.latency for a in during], 99) * 1000
        result.require(p99 < p99_budget_ms(), f"SendMessage p99 < {p99_budget_ms():g} ms")
    result.require(
        result.drain_s is not None and result.drain_s <= NOTIFICATION_SLA_SECONDS,
        f"every notification delivered within {NOTIFICATION_SLA_SECONDS:g} s of the restart",
    )
    chaos.finish(result)


async def test_notification_sigkill_5s(chaos: ChaosRun) -> None:
    """R1: SIGKILL NotificationService at ~30 % of a burst, restart it 5 s later."""
    await chaos.setup(users=10 if deep() else 4)
    await _kill_mid_burst(
        chaos, down=5, ops=1000 if deep() else 200, rate=100.0 if deep() else 25.0
    )


@pytest.mark.chaos_deep
async def test_notification_sigkill_60s(chaos: ChaosRun) -> None:
    """R1 with a 60 s outage: longer than any retry budget a relay could give up after."""
    await chaos.setup(users=8)
    await _kill_mid_burst(chaos, down=60, ops=600, rate=20.0)


@pytest.mark.chaos_deep
async def test_notification_sigstop_30s(chaos: ChaosRun) -> None:
    """R12: NotificationService paused (SIGSTOP) 30 s while 10 messages/s are sent."""
    await chaos.setup(users=6)
    base = chaos.workload.completed
    load = chaos.workload.start(400, rate=10.0, concurrency=8)
    await chaos.workload.reached(base + 50)
    cpu_before = chaos.system.cpu_seconds("message")
    paused = time.monotonic()
    chaos.system.pause("notification")
    await asyncio.sleep(30)
    relay_cpu = (chaos.system.cpu_seconds("message") - cpu_before) / (time.monotonic() - paused)
    chaos.system.resume("notification")
    chaos.heal()
    await load
    result = await chaos.check()
    during = chaos.history.attempts_between(paused, chaos.healed_at)
    failed = sum(a.code != "OK" for a in during)
    p99 = percentile([a.latency for a in during], 99) * 1000
    result.figures["sends during the pause"] = f"{len(during)}, non-OK {failed}, p99 {p99:.0f} ms"
    result.figures["MessageService CPU during the pause"] = f"{relay_cpu:.1%} of a core"
    result.require(failed == 0, "SendMessage error rate 0 during the pause")
    result.require(p99 < p99_budget_ms(), f"SendMessage p99 < {p99_budget_ms():g} ms")
    result.require(relay_cpu < 0.20, "the relay backs off: MessageService CPU < 20 % of a core")
    result.require(
        result.drain_s is not None and result.drain_s <= NOTIFICATION_SLA_SECONDS,
        f"every notification delivered within {NOTIFICATION_SLA_SECONDS:g} s of SIGCONT",
    )
    chaos.finish(result)
