"""What tracing costs per call: ``python -m tests.perf.tracing_overhead``.

1. With tracing off (the default), the hooks the hot paths run: adding the trace context to an
   outbox event, tagging a span with the request id, the relay's span around an attempt, and
   the log filter's trace id, each timed against the same work without the hook.
2. A unary gRPC call on loopback (the health service) with tracing off, then on (the gRPC
   instrumentation on both ends, spans kept by an in-memory exporter).

Prints nanoseconds per hook and microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import timeit
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from services.common import tracing
from services.common.outbox import _validated, outbox_lua_args
from services.common.tracing import current_span_ids, delivery_span, tag_request_id

EVENT = {
    "message_id": "42",
    "sender_email": "ada@example.com",
    "receiver_email": "bob@example.com",
    "timestamp": "2026-01-01T00:00:00Z",
    "preview": "hello",
}


def _ns(stmt: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e9


def _without_trace(event: dict[str, str]) -> list[str]:
    """outbox_lua_args as it was before traces were stored in events."""
    flat: list[str] = [str(2 * len(event))]
    for key, value in _validated(event).items():
        flat.extend((key, value))
    return flat


def _span_around() -> None:
    with delivery_span("outbox:notifications", "1-0", EVENT, 1):
        pass


def hooks(number: int) -> None:
    assert not tracing.enabled()
    base = _ns(lambda: _without_trace(EVENT), number)
    with_hook = _ns(lambda: outbox_lua_args(EVENT), number)
    print(f"outbox event args: {base:.0f} ns without the hook, {with_hook:.0f} ns with it")
    print(
        f"tag_request_id (both edges, per call): {_ns(lambda: tag_request_id('r'), number):.0f} ns"
    )
    print(f"relay span around an attempt (off): {_ns(_span_around, number):.0f} ns")
    print(f"log filter's trace id (per log line): {_ns(current_span_ids, number):.0f} ns")
    logger = logging.getLogger("services.common.grpc_edge")
    debug = _ns(lambda: logger.debug("handling %s", "/x"), number)
    print(f"DEBUG access line at INFO level (per call): {debug:.0f} ns")


async def _calls(port: int, count: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        for _ in range(200):  # warm up
            await stub.Check(request)
        started = time.perf_counter()
        for _ in range(count):
            await stub.Check(request)
        return (time.perf_counter() - started) / count * 1e6


async def rpc(count: int) -> float:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        return await _calls(port, count)
    finally:
        await server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000, help="hook calls per timing")
    parser.add_argument("--calls", type=int, default=3_000, help="gRPC calls per mode")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    hooks(args.number)
    off = min(asyncio.run(rpc(args.calls)) for _ in range(3))
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    # Health calls are not traced by default: trace every service here.
    tracing.setup_tracing("perf", {"OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": "none"}, exporter=exporter)
    on = min(asyncio.run(rpc(args.calls)) for _ in range(3))
    print(f"unary gRPC call on loopback: {off:.0f} us tracing off, {on:.0f} us tracing on")
    print(f"spans recorded with tracing on: {len(exporter.get_finished_spans())}")


if __name__ == "__main__":
    main()
