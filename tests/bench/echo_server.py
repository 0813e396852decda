"""The bare gRPC baselines: a grpc.aio server echoing every unary request's bytes.

``python -m tests.bench.echo_server PORT``: no interceptors, no (de)serialisation, no auth; the
loader sends it the very bytes (and metadata) it sends SendMessage, so the payload is the same.

``python -m tests.bench.echo_server PORT REDIS_URL``: the same echo after one durable write per
call, the least a durable send with an outbox does: one Lua script (a new id from a counter, the
request's bytes stored under it, an outbox entry naming it) through the auto-pipeline the
services use, on uvloop as the services run. It bounds what any SendMessage could reach on the
machine: one RPC and one write, without the auth, the checks, the indexes and the delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Final

import grpc
import grpc.aio
import redis.asyncio
import uvloop

from services.common.autopipeline import AutoPipeline

ECHO_METHOD = "/bench.Echo/Echo"

# KEYS: 1 the id counter, 2 the outbox stream. ARGV: 1 the key prefix, 2 the bytes.
STORE_LUA: Final = """
local id = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. id, ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', 'id', id)
return id
"""
STORE_PREFIX: Final = "bench:echo:"

Handler = Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _storing_echo(redis_url: str, cleanup: contextlib.AsyncExitStack) -> Handler:
    client = redis.asyncio.Redis.from_url(redis_url)
    cleanup.push_async_callback(client.aclose)
    pipeline = AutoPipeline.of(client)
    if pipeline is None:
        raise SystemExit(f"{redis_url}: a plain TCP or Unix-socket Valkey URL is needed")
    cleanup.push_async_callback(pipeline.aclose)
    store = pipeline.script(STORE_LUA, await client.script_load(STORE_LUA))
    keys = (f"{STORE_PREFIX}id", f"{STORE_PREFIX}outbox")

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await store(keys=keys, args=(STORE_PREFIX, request))
        return request

    return echo


class _Echo(grpc.GenericRpcHandler):
    def __init__(self, handler: Handler) -> None:
        self._handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            handler
        )

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        return self._handler


async def serve(port: int, redis_url: str | None = None) -> None:
    async with contextlib.AsyncExitStack() as cleanup:
        handler = _echo if redis_url is None else await _storing_echo(redis_url, cleanup)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Echo(handler),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await server.stop(0)


if __name__ == "__main__":
    port = int(sys.argv[1])
    if len(sys.argv) > 2:
        uvloop.run(serve(port, sys.argv[2]))
    else:
        asyncio.run(serve(port))
