"""The drain gate on a real server: calls in flight finish, new ones get UNAVAILABLE."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio

from services.common.draining import SHUTTING_DOWN, drain_gate
from services.common.grpc_server import add_health_and_reflection, bind_port, create_grpc_server
from tests.helpers.grpc_clients import NOT_SERVING, health_status

SERVICE = "missive.test.v1.Slow"


async def _slow(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await asyncio.sleep(float(request.decode()))
    return request


async def test_in_flight_calls_finish_and_new_calls_get_unavailable_then_connections_close() -> (
    None
):
    server = create_grpc_server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Slow": grpc.unary_unary_rpc_method_handler(_slow)}
            ),
        )
    )
    health = add_health_and_reflection(server, [SERVICE])
    port = bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    await server.start()
    gate = drain_gate(server)
    assert gate is not None and gate.ports == {port}
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    slow: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICE}/Slow")
    try:
        in_flight = asyncio.ensure_future(slow(b"0.6", timeout=5))
        await asyncio.sleep(0.2)
        assert gate.in_flight == 1
        await health.shutdown()
        draining = asyncio.create_task(gate.drain(5.0))
        await asyncio.sleep(0.05)
        try:
            await slow(b"0", timeout=5)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert exc.details() == SHUTTING_DOWN
        else:
            raise AssertionError("a call made while draining succeeded")
        # Health still answers (NOT_SERVING) while draining: probes see the flip first.
        assert await health_status(channel) == NOT_SERVING
        assert not draining.done()
        assert await in_flight == b"0.6"  # completed, not cancelled
        assert await draining is True
        assert gate.rejected == 1
        # The connections are closed: the next call fails like any lost connection.
        try:
            await slow(b"0", timeout=2)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        else:
            raise AssertionError("the server still answers after draining")
    finally:
        await channel.close()
        await server.stop(None)


async def test_drain_gives_up_after_the_grace_period() -> None:
    server = create_grpc_server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Slow": grpc.unary_unary_rpc_method_handler(_slow)}
            ),
        )
    )
    port = bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    await server.start()
    gate = drain_gate(server)
    assert gate is not None
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        slow: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"/{SERVICE}/Slow"
        )
        call = asyncio.ensure_future(slow(b"3", timeout=5))
        await asyncio.sleep(0.2)
        assert await gate.drain(0.3) is False
        assert gate.in_flight == 1
        call.cancel()
    finally:
        await channel.close()
        await server.stop(None)
