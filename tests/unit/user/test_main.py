"""The entry point: settings from the environment, both servers on one loop, clean stop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import httpx
import pytest
from missive.user.v1 import user_pb2, user_pb2_grpc

from services.common.errors import PortInUse
from services.common.ports import free_port
from services.common.settings import ConfigError
from services.user.__main__ import main
from services.user.settings import HashParams, LoginLimits, Settings
from tests.helpers.grpc_clients import SERVING, wait_for_status
from tests.unit.user.conftest import ALICE, ALICE_PASSWORD


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
    assert (settings.host, settings.rest_port, settings.grpc_port) == ("127.0.0.1", 8080, 9797)
    assert (settings.redis_db, settings.token_ttl_seconds) == (0, 900)
    assert settings.hashing == HashParams(time_cost=2, memory_kib=19456, parallelism=1)
    assert settings.hash_concurrency == 4
    assert settings.login == LoginLimits()
    assert (settings.login.max_failures, settings.login.lock_seconds) == (5, 900)
    assert (settings.login.client_attempts, settings.login.client_window_seconds) == (20, 60)
    assert settings.max_body_bytes == 64 * 1024
    assert settings.common.redis_url == "redis://127.0.0.1:6379"
    assert settings.keys_dir == keys


def test_settings_from_environment(keys: Path) -> None:
    settings = Settings.from_env(
        {
            "KEYS_DIR": str(keys),
            "BIND_HOST": "0.0.0.0",
            "USER_REST_PORT": "18080",
            "USER_GRPC_PORT": "19797",
            "USER_REDIS_DB": "3",
            "USER_TOKEN_TTL": "600",
            "USER_HASH_TIME_COST": "3",
            "USER_HASH_MEMORY_KIB": "65536",
            "USER_HASH_PARALLELISM": "2",
            "USER_HASH_CONCURRENCY": "8",
            "USER_LOGIN_MAX_FAILURES": "10",
            "USER_LOGIN_LOCK_SECONDS": "60",
            "USER_LOGIN_CLIENT_ATTEMPTS": "100",
            "USER_LOGIN_CLIENT_WINDOW_SECONDS": "30",
            "USER_LOGIN_ACCOUNT_FREE_FAILURES": "3",
            "USER_LOGIN_ACCOUNT_BASE_DELAY_MS": "500",
            "USER_LOGIN_ACCOUNT_MAX_DELAY_SECONDS": "30",
            "USER_LOGIN_ACCOUNT_WINDOW_SECONDS": "600",
            "USER_LOGIN_KNOWN_CLIENTS": "4",
            "USER_LOGIN_KNOWN_CLIENT_DAYS": "7",
            "USER_REGISTER_CLIENT_ATTEMPTS": "50",
            "USER_REGISTER_CLIENT_WINDOW_SECONDS": "120",
            "USER_MAX_BODY_BYTES": "4096",
        }
    )
    assert (settings.host, settings.rest_port, settings.grpc_port) == ("0.0.0.0", 18080, 19797)
    assert (settings.redis_db, settings.token_ttl_seconds) == (3, 600)
    assert settings.hashing == HashParams(3, 65536, 2)
    assert settings.hash_concurrency == 8
    assert settings.login == LoginLimits(10, 60, 100, 30, 3, 500, 30, 600, 4, 7, 50, 120)
    assert settings.max_body_bytes == 4096


def test_keys_create_is_only_read_by_the_settings(tmp_path: Path) -> None:
    assert Settings.from_env({"KEYS_DIR": str(tmp_path), "KEYS_CREATE": "1"}).keys_create
    assert not list(tmp_path.iterdir())  # the keys are made when the service starts


async def test_keys_create_makes_the_keys_at_start_up(tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        environ = {**_environ(tmp_path, redis_url, free_port(), port), "KEYS_CREATE": "1"}
        with pytest.raises(PortInUse, match="USER_GRPC_PORT"):
            await main(environ, asyncio.Event())
    assert list((tmp_path / "user-token").glob("*.key"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("USER_REST_PORT", "http"),
        ("USER_GRPC_PORT", "70000"),
        ("USER_REDIS_DB", "16"),
        ("USER_TOKEN_TTL", "0"),
        ("USER_HASH_TIME_COST", "1"),
        ("USER_HASH_MEMORY_KIB", "4096"),
        ("USER_HASH_PARALLELISM", "0"),
        ("USER_HASH_CONCURRENCY", "0"),
        ("USER_LOGIN_MAX_FAILURES", "0"),
        ("USER_LOGIN_LOCK_SECONDS", "-5"),
        ("USER_LOGIN_ACCOUNT_MAX_DELAY_SECONDS", "0"),
        ("USER_REGISTER_CLIENT_ATTEMPTS", "0"),
        ("USER_MAX_BODY_BYTES", "lots"),
        ("REDIS_URL", "http://x"),
    ],
)
def test_bad_settings_name_the_variable(keys: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"KEYS_DIR": str(keys), name: value})


def _environ(keys: Path, redis_url: str, rest_port: int, grpc_port: int) -> dict[str, str]:
    return {
        "KEYS_DIR": str(keys),
        "REDIS_URL": redis_url,
        "BIND_HOST": "127.0.0.1",
        "USER_REST_PORT": str(rest_port),
        "USER_GRPC_PORT": str(grpc_port),
        "SHUTDOWN_GRACE": "2",
    }


async def test_main_serves_rest_and_grpc_until_stopped(keys: Path, redis_url: str) -> None:
    rest_port, grpc_port = free_port(), free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(main(_environ(keys, redis_url, rest_port, grpc_port), stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        await wait_for_status(channel, SERVING, within=10)
        await wait_for_status(channel, SERVING, "missive.user.v1.UserService", within=5)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}") as http:
            assert (await http.get("/health")).json() == {"status": "SERVING"}
            created = await http.post(
                "/users", json={"name": "Alice", "email": ALICE, "password": ALICE_PASSWORD}
            )
            assert created.status_code == 201
        reply = await user_pb2_grpc.UserServiceStub(channel).AuthenticateUser(
            user_pb2.AuthenticateUserRequest(email=ALICE, password=ALICE_PASSWORD), timeout=5
        )
        assert reply.authenticated
        stop.set()
        await asyncio.wait_for(server, 10)
    finally:
        stop.set()
        await channel.close()
        if not server.done():
            server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_main_with_a_busy_port_names_the_variable(keys: Path, redis_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUse, match="USER_REST_PORT"):
            await main(_environ(keys, redis_url, port, free_port()), asyncio.Event())
        with pytest.raises(PortInUse, match="USER_GRPC_PORT"):
            await main(_environ(keys, redis_url, free_port(), port), asyncio.Event())
