"""A minimal service built on services.common.runner.serve, run as a subprocess by the tests."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping

import grpc
import grpc.aio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.common.grpc_server import add_health_and_reflection, bind_port, create_grpc_server
from services.common.logging import configure_logging
from services.common.redis import create_redis
from services.common.runner import ShutdownCallback, run, serve
from services.common.settings import env_float, env_int, env_str

NAME = "runner-test"
SLEEPER = "missive.test.v1.Sleeper"


async def _health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("seconds", "0")))
    return PlainTextResponse("done")


async def _sleep(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await asyncio.sleep(float(request.decode() or "0"))
    return b"done"


async def main(environ: Mapping[str, str]) -> None:
    grace = env_float(environ, "RUNNER_GRACE", 2.0, min=0.0)
    rest_port = env_int(environ, "RUNNER_REST_PORT", 0, min=0, max=65535)
    grpc_port = env_int(environ, "RUNNER_GRPC_PORT", 0, min=0, max=65535)
    redis_url = env_str(environ, "REDIS_URL", "") or None
    configure_logging("INFO", "text", NAME)

    server = create_grpc_server()
    handler = grpc.method_handlers_generic_handler(
        SLEEPER, {"Sleep": grpc.unary_unary_rpc_method_handler(_sleep)}
    )
    server.add_generic_rpc_handlers((handler,))
    health = add_health_and_reflection(server, [SLEEPER])
    bind_port(server, "127.0.0.1", grpc_port, "RUNNER_GRPC_PORT")

    app = Starlette(routes=[Route("/health", _health), Route("/slow", _slow)])
    client = create_redis(redis_url, 0) if redis_url else None

    async def ready() -> bool:
        return bool(await client.ping()) if client is not None else True

    on_shutdown: list[ShutdownCallback] = [client.aclose] if client is not None else []
    await serve(
        name=NAME,
        grpc_server=server,
        health=health,
        rest_app=app,
        rest_host="127.0.0.1",
        rest_port=rest_port,
        rest_port_env="RUNNER_REST_PORT",
        grace=grace,
        background=[lambda: health.run_checks(ready, interval=0.1)],
        on_shutdown=on_shutdown,
    )


if __name__ == "__main__":
    sys.exit(run(lambda: main(os.environ), name=NAME))
