"""``python -m services.common.healthcheck PORT``: exit 0 if the gRPC server there is SERVING.

Container healthchecks run it; the launcher uses :func:`check_async` for the same probe.
``--http`` probes an HTTP-only component (the web inbox) instead: ``GET /health`` must answer
200 with ``"status": "SERVING"`` (:func:`check_http`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
import httpx
from grpc_health.v1 import health_pb2

from services.common.ports import format_address

__all__ = ["CHANNEL_OPTIONS", "check", "check_async", "check_http", "main", "status_name"]

_METHOD = "/grpc.health.v1.Health/Check"
_Request = health_pb2.HealthCheckRequest
_Response = health_pb2.HealthCheckResponse

SERVING: int = _Response.SERVING

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # A local probe must never go through an http_proxy/grpc_proxy from the environment.
    ("grpc.enable_http_proxy", 0),
]


def status_name(status: int) -> str:
    """``SERVING``, ``NOT_SERVING``, ... for a HealthCheckResponse status number."""
    return str(_Response.ServingStatus.Name(status))


def check(host: str, port: int, *, service: str = "", timeout: float = 2.0) -> int:
    """The status ``host:port`` reports for ``service``; grpc.RpcError if it does not answer."""
    address = format_address(host, port)
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = channel.unary_unary(
            _METHOD,
            request_serializer=_Request.SerializeToString,
            response_deserializer=_Response.FromString,
        )
        reply: _Response = call(_Request(service=service), timeout=timeout)
        return reply.status


async def check_async(
    channel: grpc.aio.Channel, *, service: str = "", deadline: float = 1.0
) -> int:
    """The status the server behind ``channel`` reports; grpc.aio.AioRpcError if it does not."""
    call = channel.unary_unary(
        _METHOD,
        request_serializer=_Request.SerializeToString,
        response_deserializer=_Response.FromString,
    )
    reply: _Response = await call(_Request(service=service), timeout=deadline)
    return reply.status


def check_http(host: str, port: int, *, timeout: float = 2.0) -> str:
    """What ``GET /health`` on ``host:port`` reports (``SERVING``, ...); httpx.HTTPError if
    it does not answer. A local probe never goes through a proxy from the environment."""
    url = f"http://{format_address(host, port)}/health"
    response = httpx.get(url, timeout=timeout, trust_env=False)
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        status = response.json().get("status")
    except ValueError:
        return "not JSON"
    return str(status)


def _port(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 65535")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """0 if SERVING; 1 (with one line on stderr) otherwise; 2 on a usage error."""
    parser = argparse.ArgumentParser(
        prog="python -m services.common.healthcheck",
        description="Exit 0 if the gRPC health service on HOST:PORT reports SERVING, else 1.",
    )
    parser.add_argument("port", type=_port, help="the gRPC port to probe")
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.add_argument("--service", default="", help='service name ("" = the whole server)')
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds")
    parser.add_argument(
        "--http", action="store_true", help="probe GET /health over HTTP instead of gRPC"
    )
    args = parser.parse_args(argv)
    address = format_address(args.host, args.port)
    if args.http:
        try:
            reported = check_http(args.host, args.port, timeout=args.timeout)
        except httpx.HTTPError as exc:
            sys.stderr.write(f"healthcheck: {address}: {type(exc).__name__}: {exc}\n")
            return 1
        if reported != "SERVING":
            sys.stderr.write(f"healthcheck: {address} is {reported}\n")
            return 1
        sys.stdout.write(f"healthcheck: {address} is SERVING\n")
        return 0
    try:
        status = check(args.host, args.port, service=args.service, timeout=args.timeout)
    except grpc.RpcError as exc:
        code = exc.code().name if isinstance(exc, grpc.Call) else "ERROR"
        detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        sys.stderr.write(f"healthcheck: {address}: {code}: {detail}\n")
        return 1
    if status != SERVING:
        sys.stderr.write(f"healthcheck: {address} is {status_name(status)}\n")
        return 1
    sys.stdout.write(f"healthcheck: {address} is SERVING\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
