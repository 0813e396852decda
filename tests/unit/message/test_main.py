"""The entry point: settings, REST + gRPC + relay wired together, health, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc.aio
import httpx
import pytest
from missive.message.v1 import message_pb2, message_pb2_grpc

from services.common.errors import PortInUse
from services.common.ports import free_port
from services.common.settings import ConfigError
from services.message.__main__ import main
from services.message.settings import Settings
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.message.conftest import ADA, BOB, StartNotification, UserServiceRunning


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
    assert (settings.host, settings.rest_port, settings.grpc_port, settings.redis_db) == (
        "127.0.0.1",
        8081,
        9798,
        1,
    )
    assert settings.user_addr == "127.0.0.1:9797"
    assert settings.notification_addr == "127.0.0.1:9799"
    assert settings.common.redis_url == "redis://127.0.0.1:6379"
    assert settings.keys_dir == keys
    assert (settings.send.messages, settings.send.window_seconds) == (60, 60)
    assert settings.quota_bytes == 50 * 1024 * 1024


def test_send_limits_from_the_environment(keys: Path) -> None:
    settings = Settings.from_env(
        {
            "KEYS_DIR": str(keys),
            "MESSAGE_SEND_LIMIT": "5",
            "MESSAGE_SEND_WINDOW_SECONDS": "10",
            "MESSAGE_SENDER_QUOTA_BYTES": "1048576",
        }
    )
    assert (settings.send.messages, settings.send.window_seconds) == (5, 10)
    assert settings.quota_bytes == 1048576


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MESSAGE_REST_PORT", "eighty"),
        ("MESSAGE_GRPC_PORT", "70000"),
        ("MESSAGE_REDIS_DB", "16"),
        ("USER_SERVICE_ADDR", "localhost"),
        ("NOTIFICATION_SERVICE_ADDR", "localhost:0"),
        ("REDIS_URL", "http://localhost"),
        ("SHUTDOWN_GRACE", "-1"),
        ("MESSAGE_SEND_LIMIT", "0"),
        ("MESSAGE_SEND_WINDOW_SECONDS", "a minute"),
        ("MESSAGE_SENDER_QUOTA_BYTES", "1024"),
    ],
)
def test_bad_settings_name_the_variable(keys: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"KEYS_DIR": str(keys), name: value})


def _environ(
    keys: Path, redis_url: str, grpc_port: int, rest_port: int, users: str, notification: str
) -> dict[str, str]:
    return {
        "KEYS_DIR": str(keys),
        "REDIS_URL": redis_url,
        "MESSAGE_GRPC_PORT": str(grpc_port),
        "MESSAGE_REST_PORT": str(rest_port),
        "USER_SERVICE_ADDR": users,
        "NOTIFICATION_SERVICE_ADDR": notification,
        "SHUTDOWN_GRACE": "1",
        "LOG_LEVEL": "WARNING",
    }


async def test_main_serves_grpc_and_rest_and_relays_to_notification_service(
    keys: Path,
    redis_url: str,
    token_for: Callable[[str], str],
    user_service: UserServiceRunning,
    start_notification: StartNotification,
) -> None:
    grpc_port, rest_port, notification_port = free_port(), free_port(), free_port()
    environ = _environ(
        keys,
        redis_url,
        grpc_port,
        rest_port,
        user_service.address,
        f"127.0.0.1:{notification_port}",
    )
    stop = asyncio.Event()
    address = f"127.0.0.1:{grpc_port}"
    async with start_notification(notification_port) as notification:
        server = asyncio.create_task(main(environ, stop))
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                await wait_for_status(channel, SERVING, within=10)
                reply = await message_pb2_grpc.MessageServiceStub(channel).SendMessage(
                    message_pb2.SendMessageRequest(
                        sender_email=ADA, receiver_email=BOB, content="through main"
                    ),
                    metadata=(("authorization", f"Bearer {token_for(ADA)}"),),
                    timeout=5,
                )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
                assert (await http.get("/health")).json() == {"status": "SERVING"}
                listed = await http.get(
                    "/messages",
                    params={"email": BOB},
                    headers={"Authorization": f"Bearer {token_for(BOB)}"},
                )
                assert [m["id"] for m in listed.json()["messages"]] == [reply.message.id]
            deadline = time.monotonic() + 10
            while not notification.received and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            assert [(who, r.message_id) for who, r in notification.received] == [
                ("message", reply.message.id)
            ]
        finally:
            stop.set()
            await asyncio.wait_for(server, timeout=10)


async def test_a_taken_grpc_port_is_a_startup_error_naming_its_variable(
    keys: Path, redis_url: str
) -> None:
    grpc_port = free_port()
    blocker = grpc.aio.server()
    blocker.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await blocker.start()
    try:
        environ = _environ(keys, redis_url, grpc_port, free_port(), "127.0.0.1:1", "127.0.0.1:1")
        with pytest.raises(PortInUse, match="MESSAGE_GRPC_PORT"):
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
        environ = _environ(keys, redis_url, free_port(), rest_port, "127.0.0.1:1", "127.0.0.1:1")
        with pytest.raises(PortInUse, match="MESSAGE_REST_PORT"):
            await main(environ, asyncio.Event())
