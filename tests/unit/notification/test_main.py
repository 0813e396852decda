"""The entry point: settings, REST + gRPC + relay wired together, health, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import httpx
import pytest
from missive.notification.v1 import notification_pb2_grpc

from services.common.bootstrap import Security
from services.common.errors import PortInUse
from services.common.grpc_client import peer_channel
from services.common.ports import free_port
from services.common.settings import ConfigError
from services.notification.__main__ import main
from services.notification.settings import Settings
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.notification.conftest import BOB, StartFrontend, create_request


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


def test_settings_defaults(keys: Path) -> None:
    settings = Settings.from_env({"KEYS_DIR": str(keys)})
    assert (settings.host, settings.rest_port, settings.grpc_port) == ("127.0.0.1", 8082, 9799)
    assert (settings.redis_db, settings.frontend_addr, settings.retention) == (
        2,
        "127.0.0.1:3030",
        1000,
    )
    assert settings.common.redis_url == "redis://127.0.0.1:6379"
    assert settings.keys_dir == keys


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOTIFICATION_REST_PORT", "eighty"),
        ("NOTIFICATION_GRPC_PORT", "70000"),
        ("NOTIFICATION_REDIS_DB", "16"),
        ("NOTIFICATION_RETENTION", "0"),
        ("NOTIFICATION_RETENTION", "lots"),
        ("FRONTEND_SERVICE_ADDR", "localhost"),
        ("FRONTEND_SERVICE_ADDR", "localhost:0"),
        ("REDIS_URL", "http://localhost"),
    ],
)
def test_bad_settings_name_the_variable(keys: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"KEYS_DIR": str(keys), name: value})


def _environ(
    keys: Path, redis_url: str, grpc_port: int, rest_port: int, frontend: str
) -> dict[str, str]:
    return {
        "KEYS_DIR": str(keys),
        "REDIS_URL": redis_url,
        "NOTIFICATION_GRPC_PORT": str(grpc_port),
        "NOTIFICATION_REST_PORT": str(rest_port),
        "FRONTEND_SERVICE_ADDR": frontend,
        "SHUTDOWN_GRACE": "1",
        "LOG_LEVEL": "WARNING",
    }


async def test_main_serves_grpc_and_rest_and_relays_to_the_frontend(
    keys: Path, redis_url: str, start_frontend: StartFrontend
) -> None:
    grpc_port, rest_port, frontend_port = free_port(), free_port(), free_port()
    environ = _environ(keys, redis_url, grpc_port, rest_port, f"127.0.0.1:{frontend_port}")
    stop = asyncio.Event()
    address = f"127.0.0.1:{grpc_port}"
    async with start_frontend(frontend_port) as frontend:
        server = asyncio.create_task(main(environ, stop))
        try:
            async with grpc.aio.insecure_channel(address) as plain:
                await wait_for_status(plain, SERVING, within=10)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
                assert (await http.get("/health")).json() == {"status": "SERVING"}
            credentials = Security.load(keys, "message").credentials
            async with peer_channel(address, credentials, target="notification") as channel:
                stub = notification_pb2_grpc.NotificationServiceStub(channel)
                reply = await stub.CreateNotification(create_request(42), timeout=5)
            assert reply.created
            deadline = time.monotonic() + 10
            while not frontend.received and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert [(who, n) for who, n in frontend.received] == [
                ("notification", reply.notification)
            ]
            assert reply.notification.receiver_email == BOB
        finally:
            stop.set()
            await asyncio.wait_for(server, timeout=10)


async def test_a_taken_port_is_a_startup_error_naming_its_variable(
    keys: Path, redis_url: str
) -> None:
    grpc_port = free_port()
    blocker = grpc.aio.server()
    blocker.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await blocker.start()
    try:
        environ = _environ(keys, redis_url, grpc_port, free_port(), "127.0.0.1:3030")
        with pytest.raises(PortInUse, match="NOTIFICATION_GRPC_PORT"):
            await main(environ, asyncio.Event())
    finally:
        await blocker.stop(None)


async def test_a_taken_rest_port_is_a_startup_error_naming_its_variable(
    keys: Path, redis_url: str
) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        rest_port = blocker.getsockname()[1]
        environ = _environ(keys, redis_url, free_port(), rest_port, "127.0.0.1:3030")
        with pytest.raises(PortInUse, match="NOTIFICATION_REST_PORT"):
            await main(environ, asyncio.Event())
