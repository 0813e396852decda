"""MessageService SIGKILLed mid-burst while clients retry by client_request_id (R2, R7)."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from tests.helpers.chaos.history import Outcome
from tests.helpers.chaos.run import NOTIFICATION_SLA_SECONDS, ChaosRun

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos, pytest.mark.chaos_deep]


@pytest.mark.parametrize("kill_at", [0.2, 0.5, 0.8])
async def test_message_sigkill_with_client_retries(chaos: ChaosRun, kill_at: float) -> None:
    """R2: 20 clients x 25 sends, each retried with its client_request_id until answered;
    SIGKILL MessageService at a random point, restart it 5 s later.

    Every operation ends ok, each stored once; the relay resumes from the outbox (its
    pending entries are reclaimed) and every notification arrives within 10 s of the restart.
    """
    await chaos.setup(users=8, retry_for=60.0)
    ops = 500
    base = chaos.workload.completed
    load = chaos.workload.start(ops, concurrency=20)
    at = int(ops * random.uniform(kill_at - 0.1, kill_at + 0.1))
    await chaos.workload.reached(base + at)
    chaos.system.kill("message")
    await asyncio.sleep(5)
    chaos.system.start("message")
    await chaos.system.wait_healthy("message")
    chaos.heal()
    await load
    await _same_key_concurrently(chaos)
    result = await chaos.check()
    retried = sum(len(op.attempts) > 1 for op in chaos.history.ops)
    result.figures["killed after"] = f"{at} operations; {retried} operations retried"
    result.require(result.info == 0 and result.fail == 0, "every retried operation ends ok")
    result.require(
        result.drain_s is not None and result.drain_s <= NOTIFICATION_SLA_SECONDS,
        f"every notification delivered within {NOTIFICATION_SLA_SECONDS:g} s of the restart",
    )
    result.require(not chaos.extra_violations, "; ".join(chaos.extra_violations) or "idempotency")
    chaos.finish(result)


async def _same_key_concurrently(chaos: ChaosRun) -> None:
    """R7 (b): the same SendMessage and client_request_id 8x concurrently -> one message;
    each reply OK with that message's id or ABORTED; a retry afterwards is OK, same id."""
    op = chaos.workload.new_op()
    codes = await asyncio.gather(*(chaos.workload.attempt(op) for _ in range(8)))
    again = await chaos.workload.attempt(op)
    op.outcome = Outcome.OK if again == grpc.StatusCode.OK else Outcome.INFO
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.ABORTED}
    if not set(codes) <= allowed or grpc.StatusCode.OK not in codes:
        chaos.extra_violations.append(f"8 concurrent sends with one key answered {codes}")
    if again != grpc.StatusCode.OK or op.message_id is None or op.message_id < 0:
        chaos.extra_violations.append(
            f"the same key answered with different ids or no OK afterwards ({again})"
        )
