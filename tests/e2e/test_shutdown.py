"""SIGTERM under load: new calls get UNAVAILABLE (retryable), never CANCELLED; in-flight complete.

Each service process is started by its real entry point, loaded by concurrent clients on their
own channels, and sent SIGTERM; every call's status is counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import subprocess
from collections.abc import Awaitable, Callable

import grpc
import grpc.aio
from missive.message.v1 import message_pb2, message_pb2_grpc
from missive.user.v1 import user_pb2, user_pb2_grpc

from tests.helpers.clients import User, register_and_login
from tests.helpers.grpc_clients import SERVING, health_status
from tests.helpers.system import System

WORKERS = 16
# What a client may see from a service that is going away: it answered, or told the client to
# retry (UNAVAILABLE, also gRPC's own status for a refused connection).
ALLOWED = {"OK", "UNAVAILABLE"}

Call = Callable[[grpc.aio.Channel, int], Awaitable[object]]


async def _load(system: System, name: str, call: Call) -> collections.Counter[str]:
    """Run ``WORKERS`` clients calling ``name`` in a loop; SIGTERM it after 1 s; the statuses."""
    counts: collections.Counter[str] = collections.Counter()
    details: dict[str, str] = {}
    health: list[str] = []
    process = system.services[name].process
    assert process is not None
    stopped = asyncio.Event()

    async def worker(index: int) -> None:
        # One channel per worker, as separate clients would have.
        async with grpc.aio.insecure_channel(system.grpc_addr(name)) as channel:
            n = 0
            while not stopped.is_set():
                n += 1
                try:
                    await call(channel, index * 100_000 + n)
                    counts["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    counts[exc.code().name] += 1
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        details[exc.code().name] = exc.details() or ""
                    await asyncio.sleep(0.01)

    async def watch_health() -> None:
        async with grpc.aio.insecure_channel(system.grpc_addr(name)) as channel:
            while not stopped.is_set():
                try:
                    status = await health_status(channel, deadline=0.5)
                    seen = "SERVING" if status == SERVING else "NOT_SERVING"
                except grpc.aio.AioRpcError as exc:
                    seen = exc.code().name
                if not health or health[-1] != seen:
                    health.append(seen)
                await asyncio.sleep(0.005)

    workers = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
    workers.append(asyncio.create_task(watch_health()))
    await asyncio.sleep(1.0)
    before = counts["OK"]
    process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(process.wait, 15)
    await asyncio.sleep(0.3)  # calls to the closed port, too
    stopped.set()
    await asyncio.gather(*workers)
    assert process.poll() == 0, f"{name} exit code {process.poll()}:\n{system.log_tail(name)}"
    assert before > 0, f"no call succeeded before SIGTERM: {counts}"
    assert not details, f"statuses other than OK and UNAVAILABLE: {details}, {dict(counts)}"
    # Health said NOT_SERVING while the server still answered, before the listener closed.
    assert health[:3] == ["SERVING", "NOT_SERVING", "UNAVAILABLE"], health
    return counts


async def test_sigterm_of_message_service_under_send_load_never_cancels(
    fresh_system: System,
) -> None:
    fresh_system.start("user", "message")
    await fresh_system.wait_healthy("user", "message")
    ada: User = await register_and_login(fresh_system, "Ada")
    bob: User = await register_and_login(fresh_system, "Bob")

    async def send(channel: grpc.aio.Channel, n: int) -> object:
        return await message_pb2_grpc.MessageServiceStub(channel).SendMessage(
            message_pb2.SendMessageRequest(
                sender_email=ada.email,
                receiver_email=bob.email,
                content=f"message {n}",
                client_request_id=f"req-{n}",
            ),
            metadata=ada.metadata,
            timeout=10,
        )

    counts = await _load(fresh_system, "message", send)
    print(f"SendMessage during SIGTERM: {dict(counts)}")
    assert not {code for code, n in counts.items() if code not in ALLOWED}, dict(counts)
    assert counts["UNAVAILABLE"] > 0  # the load did reach the shutdown


async def test_sigterm_of_user_service_under_load_never_cancels(fresh_system: System) -> None:
    fresh_system.start("user")
    await fresh_system.wait_healthy("user")
    ada = await register_and_login(fresh_system, "Ada")

    async def get(channel: grpc.aio.Channel, n: int) -> object:
        return await user_pb2_grpc.UserServiceStub(channel).GetUser(
            user_pb2.GetUserRequest(email=ada.email), metadata=ada.metadata, timeout=10
        )

    counts = await _load(fresh_system, "user", get)
    print(f"GetUser during SIGTERM: {dict(counts)}")
    assert not {code for code, n in counts.items() if code not in ALLOWED}, dict(counts)
