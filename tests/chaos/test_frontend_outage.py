"""FrontendService killed or hung with live streams open: every stream gets every notification
once (R3, and the hung-receiver case: a paused FrontendService must not block the others)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.chaos.history import Outcome
from tests.helpers.chaos.run import NOTIFICATION_SLA_SECONDS, ChaosRun, deep
from tests.helpers.chaos.streams import end_codes

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos]


async def test_frontend_sigkill_with_streams_open(chaos: ChaosRun) -> None:
    """SIGKILL FrontendService under load while every user has a live stream; restart it.

    Streams reconnect (deduping the replay as the SDK does). Deep: down 60 s with 500 sends,
    and during the outage every notification is stored within 10 s of its send (R3).
    """
    ops, users, rate, down = (500, 8, 25.0, 60.0) if deep() else (150, 4, 25.0, 3.0)
    await chaos.setup(users=users)
    base = chaos.workload.completed
    load = chaos.workload.start(ops, rate=rate)
    await chaos.workload.reached(base + ops // 5)
    killed = time.monotonic()
    chaos.system.kill("frontend")
    await asyncio.sleep(down)
    snap = await chaos.reader.snapshot()
    stored = {n.message_id for n in snap.notifications}
    cutoff = time.monotonic() - NOTIFICATION_SLA_SECONDS
    late = [
        op.index
        for op in chaos.history.by_outcome(Outcome.OK)
        if (op.completed_at or 0) < cutoff and op.message_id not in stored
    ]
    chaos.system.start("frontend")
    await chaos.system.wait_healthy("frontend")
    chaos.heal()
    await load
    result = await chaos.check()
    result.figures["stored later than 10 s during the outage"] = str(len(late))
    result.figures["catch-up"] = chaos.catch_up(killed, result)
    result.figures["stream connections ended by"] = str(end_codes(chaos.streams))
    result.require(not late, "notifications stored within 10 s of each send during the outage")
    result.require(
        result.drain_s is not None and result.drain_s <= NOTIFICATION_SLA_SECONDS,
        f"every stream complete within {NOTIFICATION_SLA_SECONDS:g} s of the restart",
    )
    chaos.finish(result)


@pytest.mark.chaos_deep
async def test_frontend_sigstop_40s_with_streams_open(chaos: ChaosRun) -> None:
    """FrontendService hung (SIGSTOP) 40 s: the streams stay connected through the pause and,
    once it resumes, still receive every notification - none is given up on, none waits
    behind another for longer than the SLA."""
    await chaos.setup(users=6)
    base = chaos.workload.completed
    load = chaos.workload.start(300, rate=10.0)
    await chaos.workload.reached(base + 50)
    chaos.system.pause("frontend")
    await asyncio.sleep(40)
    chaos.system.resume("frontend")
    chaos.heal()
    await load
    result = await chaos.check()
    result.figures["stream connections ended by"] = str(end_codes(chaos.streams))
    result.require(
        result.drain_s is not None and result.drain_s <= NOTIFICATION_SLA_SECONDS,
        f"every stream complete within {NOTIFICATION_SLA_SECONDS:g} s of SIGCONT",
    )
    chaos.finish(result)
