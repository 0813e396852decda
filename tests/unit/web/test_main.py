"""The entry point: serves, reports health, refuses a busy port, stops promptly on request."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from services.common.errors import PortInUse
from services.common.ports import free_port
from services.web.__main__ import main


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() installs a process-wide handler; take it away again after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


async def _until_healthy(url: str, within: float = 10.0) -> httpx.Response:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(trust_env=False) as client:
        while True:
            try:
                return await client.get(f"{url}/health", timeout=0.5)
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def test_serves_until_stopped_and_ends_open_live_streams_at_once() -> None:
    port = free_port()
    stop = asyncio.Event()
    env = {"WEB_PORT": str(port), "SHUTDOWN_GRACE": "5", "FRONTEND_SERVICE_ADDR": "127.0.0.1:9"}
    server = asyncio.create_task(main(env, stop))
    url = f"http://127.0.0.1:{port}"
    health = await _until_healthy(url)
    assert health.json() == {"status": "SERVING", "live_streams": 0}
    now = int(time.time())
    token = jwt.encode({"sub": "ada@example.com", "exp": now + 600}, "k" * 32, algorithm="HS256")
    async with httpx.AsyncClient(
        base_url=url, trust_env=False, cookies={"missive_session": token}
    ) as client:
        page = await client.get("/signin")
        assert page.status_code == 200
        assert "content-security-policy" in page.headers
        # A live stream whose upstream (nothing on port 9) keeps reconnecting: it stays open.
        async with client.stream("GET", "/events", timeout=10) as events:
            assert events.status_code == 200
            for _ in range(200):
                if (await client.get("/health")).json()["live_streams"] == 1:
                    break
                await asyncio.sleep(0.05)
            started = time.monotonic()
            stop.set()
            async for _ in events.aiter_bytes():
                pass  # ends when the server ends the stream
    await asyncio.wait_for(server, 10)
    assert time.monotonic() - started < 4, "stopping must not wait for the whole grace period"
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/health", timeout=1)


async def test_a_busy_port_names_its_variable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse, match="WEB_PORT"):
            await main({"WEB_PORT": str(port)}, asyncio.Event())
