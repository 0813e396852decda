"""Health follows a real check through a real grpc.aio server; reflection; clear port errors."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import grpc.aio
import pytest

from services.common.errors import PortInUse
from services.common.grpc_server import (
    HealthReporter,
    add_health_and_reflection,
    bind_port,
    create_grpc_server,
)
from tests.helpers.grpc_clients import (
    NOT_SERVING,
    SERVING,
    health_status,
    health_watch,
    next_status,
    reflected_services,
    wait_for_status,
)

SERVICE = "missive.test.v1.Echo"
LOGGER = "services.common.grpc_server"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


@dataclass
class Running:
    health: HealthReporter
    channel: grpc.aio.Channel
    port: int


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    server = create_grpc_server()
    echo = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((echo,))
    health = add_health_and_reflection(server, [SERVICE])
    port = bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Running(health, channel, port)
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_starts_not_serving_until_a_check_succeeds(running: Running) -> None:
    assert running.port > 0
    assert await health_status(running.channel, "") == NOT_SERVING
    assert await health_status(running.channel, SERVICE) == NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_status(running.channel, "missive.unknown.v1.Nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_status_follows_the_check(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    answer: bool | Exception = True

    async def check() -> bool:
        if isinstance(answer, Exception):
            raise answer
        return answer

    caplog.set_level(logging.INFO, logger=LOGGER)
    task = asyncio.create_task(running.health.run_checks(check, interval=0.01))
    try:
        await wait_for_status(running.channel, SERVING)
        assert await health_status(running.channel, SERVICE) == SERVING
        assert running.health.serving

        answer = False
        await wait_for_status(running.channel, NOT_SERVING)
        assert await health_status(running.channel, SERVICE) == NOT_SERVING

        answer = ConnectionError("redis is down")
        await asyncio.sleep(0.1)  # about ten failing checks
        assert await health_status(running.channel) == NOT_SERVING
        assert not task.done()  # exceptions never escape

        answer = True
        await wait_for_status(running.channel, SERVING)
    finally:
        await _stop(task)

    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    # One line per transition; failing again, now with an exception, adds none.
    assert messages == [
        "health: SERVING",
        "health: NOT_SERVING (readiness check failed)",
        "health: SERVING",
    ]


async def test_exception_and_hang_count_as_not_serving(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def check() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            return True
        if calls == 2:
            raise ConnectionError("redis is down")
        await asyncio.sleep(10)
        return True

    task = asyncio.create_task(running.health.run_checks(check, interval=0.01, check_timeout=0.05))
    try:
        await wait_for_status(running.channel, SERVING)
        await wait_for_status(running.channel, NOT_SERVING)
        await asyncio.sleep(0.15)  # at least one hung check timed out
        assert calls >= 3
        assert await health_status(running.channel) == NOT_SERVING
    finally:
        await _stop(task)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "health: NOT_SERVING (readiness check raised ConnectionError: redis is down)"
    ]


async def test_shutdown_is_permanent_and_reaches_watchers(running: Running) -> None:
    async def always() -> bool:
        return True

    task = asyncio.create_task(running.health.run_checks(always, interval=0.01))
    watch = health_watch(running.channel, SERVICE)
    try:
        await wait_for_status(running.channel, SERVING)
        async with asyncio.timeout(2):
            while await next_status(watch) != SERVING:
                pass
        await running.health.shutdown()
        async with asyncio.timeout(2):
            assert await next_status(watch) == NOT_SERVING
        await running.health.set_serving(True)
        await asyncio.sleep(0.05)  # the check loop would have flipped it back by now
        assert await health_status(running.channel, "") == NOT_SERVING
        assert await health_status(running.channel, SERVICE) == NOT_SERVING
    finally:
        watch.cancel()
        await _stop(task)


async def test_reflection_lists_the_services(running: Running) -> None:
    assert await reflected_services(running.channel) == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_receive_limit_is_one_mebibyte(running: Running) -> None:
    echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = running.channel.unary_unary(
        f"/{SERVICE}/Echo"
    )
    assert await echo(b"x" * 1000, timeout=2) == b"x" * 1000
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await echo(b"x" * (1024 * 1024 + 1), timeout=2)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_busy_port_names_the_variable(listening_socket: socket.socket) -> None:
    port = listening_socket.getsockname()[1]
    server = create_grpc_server()
    with pytest.raises(PortInUse) as info:
        bind_port(server, "127.0.0.1", port, "USER_GRPC_PORT")
    assert str(info.value) == f"port {port} is already in use (set USER_GRPC_PORT to change it)"
    assert (info.value.port, info.value.env_var) == (port, "USER_GRPC_PORT")


async def test_second_grpc_server_cannot_share_a_port(running: Running) -> None:
    other = create_grpc_server()
    with pytest.raises(PortInUse, match=f"port {running.port} is already in use"):
        bind_port(other, "127.0.0.1", running.port, "USER_GRPC_PORT")
    with pytest.raises(PortInUse):
        bind_port(other, "[::]", running.port, "USER_GRPC_PORT")
