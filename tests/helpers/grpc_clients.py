"""Typed gRPC clients for the standard health and reflection services, for tests."""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse


async def health_status(channel: grpc.aio.Channel, service: str = "", deadline: float = 2.0) -> int:
    """The status grpc.health.v1.Health/Check reports for ``service``."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    reply: Response = await check(Request(service=service), timeout=deadline)
    return reply.status


def health_watch(
    channel: grpc.aio.Channel, service: str = ""
) -> grpc.aio.UnaryStreamCall[Request, Response]:
    """A grpc.health.v1.Health/Watch stream; read it with :func:`next_status`."""
    watch: grpc.aio.UnaryStreamMultiCallable[Request, Response] = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )
    return watch(Request(service=service))


async def next_status(call: grpc.aio.UnaryStreamCall[Request, Response]) -> int:
    """The next status a Watch stream sends."""
    reply = await call.read()
    assert isinstance(reply, Response), "the Watch stream ended"
    return reply.status


async def wait_for_status(
    channel: grpc.aio.Channel, expected: int, service: str = "", within: float = 5.0
) -> None:
    """Poll Check until it reports ``expected``; AssertionError after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await health_status(channel, service, deadline=0.5)
        except grpc.aio.AioRpcError as exc:
            last = exc.code()
        if last == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"health of {service!r} is {last}, expected {expected}")


async def reflected_services(channel: grpc.aio.Channel) -> set[str]:
    """The service names v1alpha reflection lists."""
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    try:
        reply = await call.read()
        assert isinstance(reply, reflection_pb2.ServerReflectionResponse)
        return {service.name for service in reply.list_services_response.service}
    finally:
        call.cancel()
