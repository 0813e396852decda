"""Valkey crashed, stalled or full: acknowledged data survives, no duplicates, no partial writes
(R4, R6 by SIGSTOP, R14)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import grpc
import pytest
import redis.asyncio
from missive.message.v1 import message_pb2, message_pb2_grpc

from tests.helpers.chaos.history import SendOp
from tests.helpers.chaos.run import ChaosRun
from tests.helpers.chaos.store import DATABASES
from tests.helpers.chaos.workload import SEND_DEADLINE_SECONDS

pytestmark = [pytest.mark.e2e, pytest.mark.fault, pytest.mark.chaos, pytest.mark.chaos_deep]

DURABILITY_WINDOW_SECONDS = 2.0  # appendfsync everysec: the last ~1-2 s may be lost on a crash
SERVICES = ("user", "message", "notification", "frontend")


async def test_valkey_sigkill_restart_on_aof(chaos: ChaosRun) -> None:
    """R4: 20 clients send continuously; SIGKILL valkey-server; restart it 5 s later on the
    same port and AOF. Services recover without a restart."""
    await chaos.setup(users=8)
    pids = {name: chaos.system.pid(name) for name in SERVICES}
    base = chaos.workload.completed
    load = chaos.workload.start(800, rate=50.0, concurrency=20)
    await chaos.workload.reached(base + 300)
    killed = time.monotonic()
    chaos.system.kill_valkey()
    await asyncio.sleep(5)
    restarting = time.monotonic()
    await chaos.system.start_valkey()
    restarted = time.monotonic()
    await chaos.system.wait_healthy(within=30)
    healthy_after = time.monotonic() - restarted
    chaos.heal()
    await load

    def in_window(op: SendOp) -> bool:
        done = op.completed_at or 0.0
        return killed - DURABILITY_WINDOW_SECONDS <= done <= killed

    result = await chaos.check(allow_lost=in_window)
    started = chaos.history.attempts_between(killed + 0.2, restarting)
    # An attempt that started while Valkey was down but reached it after the restart may
    # rightly succeed: the outage's answers are those given before the restart began.
    during = [a for a in started if a.ended < restarting]
    codes = sorted({a.code for a in during})
    slowest = max((a.latency for a in started), default=0.0)
    first_ok = min(
        (
            a.ended
            for op in chaos.history.ops
            for a in op.attempts
            if a.started >= restarted and a.code == "OK"
        ),
        default=None,
    )
    result.figures["sends during the outage"] = (
        f"{len(during)}: {codes}, slowest {slowest * 1000:.0f} ms"
    )
    result.figures["SERVING again"] = f"{healthy_after:.2f} s after the restart"
    result.figures["first OK send"] = (
        f"{first_ok - restarted:.2f} s after the restart" if first_ok else "none"
    )
    result.require(
        bool(during) and set(codes) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"},
        "during the outage every send is UNAVAILABLE or DEADLINE_EXCEEDED, none OK",
    )
    result.require(slowest <= SEND_DEADLINE_SECONDS + 0.5, "each within the deadline + 0.5 s")
    result.require(
        all(chaos.system.pid(name) == pid for name, pid in pids.items()),
        "services recover without a restart",
    )
    result.require(healthy_after <= 10, "SERVING within 10 s of Valkey's restart")
    result.require(first_ok is not None and first_ok - restarted <= 10, "first OK send within 10 s")
    chaos.finish(result)


async def test_valkey_paused_5s_no_duplicates_from_retries(chaos: ChaosRun) -> None:
    """Valkey stalled (SIGSTOP) 5 s while clients send and retry by client_request_id:
    replies time out although the writes may apply later; the retries store nothing twice."""
    await chaos.setup(users=6, retry_for=60.0)
    base = chaos.workload.completed
    load = chaos.workload.start(300, rate=30.0, concurrency=10)
    await chaos.workload.reached(base + 100)
    chaos.system.pause("valkey")
    await asyncio.sleep(5)
    chaos.system.resume("valkey")
    chaos.heal()
    await load
    result = await chaos.check()
    retried = sum(len(op.attempts) > 1 for op in chaos.history.ops)
    result.figures["operations retried"] = str(retried)
    result.require(result.info == 0 and result.fail == 0, "every retried operation ends ok")
    chaos.finish(result)


async def test_valkey_maxmemory_reached(chaos: ChaosRun) -> None:
    """R14: maxmemory just above the current use, noeviction, sends continue.

    Sends fail cleanly (UNAVAILABLE or RESOURCE_EXHAUSTED, never OK once full), no partial
    writes, DBSIZE never decreases, reads keep working; after raising the limit, sends
    succeed within 10 s and every notification arrives.
    """
    await chaos.setup(users=4)
    url = chaos.system.valkey.url
    sizes: list[dict[int, int]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(redis.RedisError):
                sizes.append(await chaos.reader.dbsize())
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    async with redis.asyncio.Redis.from_url(url, decode_responses=True) as admin:
        policy = str((await admin.config_get("maxmemory-policy"))["maxmemory-policy"])
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", str(used + 512 * 1024))
        full_since = None
        for _ in range(1500):
            op = await chaos.workload.send()
            if op.code != "OK":
                full_since = full_since or time.monotonic()
                if time.monotonic() - full_since > 3:
                    break
        reads_ok = await _reads_work(chaos)
        await admin.config_set("maxmemory", "0")
    raised = time.monotonic()
    first_ok = None
    while time.monotonic() - raised < 15:
        op = await chaos.workload.send()
        if op.code == "OK":
            first_ok = time.monotonic() - raised
            break
        await asyncio.sleep(0.2)
    chaos.heal()
    await chaos.workload.run(20, rate=20.0, concurrency=4)
    stop.set()
    await sampler
    result = await chaos.check()
    full = [
        a
        for op in chaos.history.ops
        for a in op.attempts
        if full_since is not None and full_since <= a.started < raised
    ]
    codes = sorted({a.code for a in full})
    decreases = [
        (db, a[db], b[db])
        for a, b in itertools.pairwise(sizes)
        for db in DATABASES
        if b[db] < a[db]
    ]
    result.figures["maxmemory-policy"] = policy
    result.figures["sends once full"] = f"{len(full)}: {codes}"
    result.figures["DBSIZE samples"] = f"{len(sizes)}, decreases {decreases[:3]}"
    result.figures["first OK after raising the limit"] = (
        f"{first_ok:.2f} s" if first_ok is not None else "none"
    )
    result.require(policy == "noeviction", "maxmemory-policy is noeviction")
    result.require(full_since is not None, "memory became full")
    # An OK while full is fine when the write did commit (memory is freed as streams are
    # acknowledged and trimmed); the checker proves it did: nothing lost, nothing partial.
    result.require(
        bool(set(codes) - {"OK"}) and set(codes) <= {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"},
        "once full, sends fail with UNAVAILABLE or RESOURCE_EXHAUSTED (no other status)",
    )
    result.require(not decreases, "DBSIZE never decreases (nothing evicted)")
    result.require(reads_ok, "reads keep working while full")
    result.require(first_ok is not None and first_ok <= 10, "sends succeed within 10 s")
    chaos.finish(result)


async def _reads_work(chaos: ChaosRun) -> bool:
    user = chaos.users[0]
    async with grpc.aio.insecure_channel(chaos.system.grpc_addr("message")) as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        try:
            await stub.GetMessages(
                message_pb2.GetMessagesRequest(user_email=user.email, page_size=10),
                metadata=user.metadata,
                timeout=5,
            )
        except grpc.aio.AioRpcError:
            return False
    return True


async def test_valkey_sigterm_loses_nothing(chaos: ChaosRun) -> None:
    """R13 for Valkey: SIGTERM under load flushes the AOF; after the restart nothing
    acknowledged is missing (no durability window, unlike a crash)."""
    await chaos.setup(users=6)
    base = chaos.workload.completed
    load = chaos.workload.start(400, rate=40.0, concurrency=10)
    await chaos.workload.reached(base + 150)
    await chaos.system.terminate_valkey()
    await asyncio.sleep(2)
    await chaos.system.start_valkey()
    await chaos.system.wait_healthy(within=30)
    chaos.heal()
    await load
    result = await chaos.check()
    chaos.finish(result)
