"""The REST server's connection defences, over real sockets: trusted proxies, timeouts, caps."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.common.errors import ConfigError
from services.common.grpc_server import add_health_and_reflection, bind_port, create_grpc_server
from services.common.ports import free_port
from services.common.runner import serve
from services.common.settings import CommonSettings, RestEdgeSettings

FORWARDED = "203.0.113.77"


async def _client(request: Request) -> JSONResponse:
    client = request.scope.get("client")
    return JSONResponse({"client": client[0] if client else None})


async def _echo(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


BIG = 64 * 1024 * 1024  # more than loopback socket buffers hold, so writing must pause


async def _big(_request: Request) -> Response:
    return Response(b"x" * BIG, media_type="application/octet-stream")


APP = Starlette(
    routes=[
        Route("/client", _client),
        Route("/echo", _echo, methods=["POST"]),
        Route("/big", _big),
    ]
)


@asynccontextmanager
async def serving(rest_edge: RestEdgeSettings | None = None) -> AsyncIterator[int]:
    """The test app behind serve() on a free port, with `rest_edge` (None: serve's default)."""
    server = create_grpc_server()
    health = add_health_and_reflection(server, [])
    bind_port(server, "127.0.0.1", 0, "TEST_GRPC_PORT")
    port = free_port()
    stop = asyncio.Event()
    extra = {} if rest_edge is None else {"rest_edge": rest_edge}
    task = asyncio.create_task(
        serve(
            name="edge",
            grpc_server=server,
            health=health,
            rest_app=APP,
            rest_host="127.0.0.1",
            rest_port=port,
            grace=0.2,
            stop=stop,
            **extra,  # type: ignore[arg-type]
        )
    )
    try:
        await _wait_listening(port)
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on {port}")


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it does not.

    A reset counts as closed: closing on a client that is still sending resets the connection.
    """
    received = b""
    async with asyncio.timeout(seconds):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


# -- trusted proxies ------------------------------------------------------------------------


async def test_forwarded_headers_are_ignored_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    async with serving() as port, httpx.AsyncClient() as http:
        reply = await http.get(
            f"http://127.0.0.1:{port}/client",
            headers={"X-Forwarded-For": FORWARDED, "X-Forwarded-Proto": "https"},
        )
    assert reply.json() == {"client": "127.0.0.1"}
    access = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert access and all(FORWARDED not in line for line in access)
    assert any("127.0.0.1" in line for line in access)


async def test_forwarded_headers_count_from_a_configured_proxy_only() -> None:
    trusting = RestEdgeSettings(trusted_proxies=("127.0.0.0/8",))
    async with serving(trusting) as port, httpx.AsyncClient() as http:
        reply = await http.get(
            f"http://127.0.0.1:{port}/client", headers={"X-Forwarded-For": FORWARDED}
        )
    assert reply.json() == {"client": FORWARDED}
    elsewhere = RestEdgeSettings(trusted_proxies=("10.0.0.1",))
    async with serving(elsewhere) as port, httpx.AsyncClient() as http:
        reply = await http.get(
            f"http://127.0.0.1:{port}/client", headers={"X-Forwarded-For": FORWARDED}
        )
    assert reply.json() == {"client": "127.0.0.1"}


def test_trusted_proxies_from_the_environment() -> None:
    assert CommonSettings.from_env({}).rest.trusted_proxies == ()
    settings = CommonSettings.from_env({"REST_TRUSTED_PROXIES": " 10.0.0.0/8, 192.0.2.1 ,::1"})
    assert settings.rest.trusted_proxies == ("10.0.0.0/8", "192.0.2.1", "::1")
    assert settings.rest.is_trusted_proxy("10.1.2.3")
    assert not settings.rest.is_trusted_proxy("127.0.0.1")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REST_TRUSTED_PROXIES", "*"),
        ("REST_TRUSTED_PROXIES", "proxy.internal"),
        ("REST_HEADER_TIMEOUT", "0"),
        ("REST_IDLE_TIMEOUT", "soon"),
        ("REST_MAX_CONNECTIONS_PER_CLIENT", "0"),
    ],
)
def test_bad_rest_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        CommonSettings.from_env({name: value})


def test_rest_defaults() -> None:
    rest = CommonSettings.from_env({}).rest
    assert (rest.header_timeout, rest.idle_timeout, rest.max_connections_per_client) == (
        10.0,
        15.0,
        64,
    )


# -- timeouts -------------------------------------------------------------------------------

QUICK = RestEdgeSettings(header_timeout=0.5, idle_timeout=1.0)


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with serving(QUICK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        await _closed_within(reader, 5)
        assert 0.4 < time.monotonic() - started < 3
        writer.close()


@pytest.mark.parametrize("first", [True, False])
async def test_partial_headers_are_closed_after_the_header_timeout(first: bool) -> None:
    async with serving(QUICK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if not first:  # a complete request, then a second one that never finishes its headers
            writer.write(b"GET /client HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            assert (await reader.readuntil(b"}")).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        # Trickle header bytes: activity alone must not extend the deadline.
        writer.write(b"GET /client HTTP/1.1\r\n")
        for _ in range(20):
            if reader.at_eof():
                break
            writer.write(b"X-Slow: 1\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.1)
        await _closed_within(reader, 5)
        assert time.monotonic() - started < 3
        writer.close()


async def test_a_stalled_request_body_is_closed_after_the_idle_timeout() -> None:
    async with serving(QUICK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        started = time.monotonic()
        received = await _closed_within(reader, 5)
        assert 0.9 < time.monotonic() - started < 3.5
        assert b"200 OK" not in received
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with serving(QUICK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /client HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"}")).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        await _closed_within(reader, 5)
        assert time.monotonic() - started < 3
        writer.close()


async def test_a_client_that_stops_reading_the_response_is_closed() -> None:
    async with serving(QUICK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
        writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        # Read nothing for several idle timeouts (a loaded machine may take a while to fill the
        # socket buffers before the stall can even start).
        await asyncio.sleep(6)
        received = 0
        try:
            async with asyncio.timeout(20):
                while chunk := await reader.read(1 << 20):
                    received += len(chunk)
        except ConnectionError:
            pass
        assert received < BIG  # closed before the whole response went out
        writer.close()


async def test_a_slow_but_steady_body_and_a_slow_app_are_served() -> None:
    async with serving(QUICK) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\n")
        for byte in b"abcdef":  # 1.8 s in all, never silent for the idle timeout
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.3)
        reply = await reader.readuntil(b"}")
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b'{"size":6}')
        writer.close()


# -- the per-client connection cap ----------------------------------------------------------


async def test_connections_per_client_are_capped() -> None:
    capped = RestEdgeSettings(max_connections_per_client=3, header_timeout=30)
    async with serving(capped) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /client HTTP/1.1\r\nHost: t\r\n\r\n")
        refused = await _closed_within(reader, 5)
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429")
        assert b"content-type: application/problem+json" in head.lower()
        assert b"retry-after: 1" in head.lower()
        assert "3 open connections" in json.loads(body)["detail"]
        writer.close()
        # The held ones still work, and closing one makes room again.
        reader0, writer0 = held[0]
        writer0.write(b"GET /client HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await reader0.readuntil(b"}")).startswith(b"HTTP/1.1 200")
        writer0.close()
        await writer0.wait_closed()
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/client")).status_code == 200
        for _, other in held[1:]:
            other.close()


async def test_a_trusted_proxy_is_not_capped() -> None:
    proxy = RestEdgeSettings(
        max_connections_per_client=1, header_timeout=30, trusted_proxies=("127.0.0.1",)
    )
    async with serving(proxy) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/client")).status_code == 200
        for _, writer in held:
            writer.close()
