"""The service shell: keys at start-up, health from the Redis it opened, stop hooks, clean close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc.aio
import pytest

from services.common.app import Parts, ServiceApp, Start
from services.common.auth import TokenVerifier
from services.common.bootstrap import Readiness
from services.common.ports import free_port
from services.common.sessions import Sessions
from services.common.settings import CommonSettings, env_server
from tests.helpers.grpc_clients import NOT_SERVING, SERVING, wait_for_status

GRPC_PORT_ENV = "SHELL_TEST_GRPC_PORT"


@dataclass(frozen=True)
class Settings:
    GRPC_PORT_ENV: ClassVar[str] = GRPC_PORT_ENV
    REST_PORT_ENV: ClassVar[str] = ""

    common: CommonSettings
    keys_dir: Path
    keys_create: bool
    host: str
    grpc_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return cls(**env_server(environ, GRPC_PORT_ENV, 0))


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


def _no_servicers(server: grpc.aio.Server, service: None) -> list[str]:
    return []


def _environ(keys: Path, redis_url: str, port: int) -> dict[str, str]:
    return {
        "KEYS_DIR": str(keys),
        "KEYS_CREATE": "1",
        "REDIS_URL": redis_url,
        GRPC_PORT_ENV: str(port),
        "SHUTDOWN_GRACE": "1",
    }


async def test_the_shell_serves_what_the_wiring_declares(tmp_path: Path, redis_url: str) -> None:
    events: list[str] = []

    def wire(start: Start[Settings]) -> Parts[None]:
        redis = start.redis(3)

        async def background() -> None:
            await redis.set("shell-test", "ran")
            events.append("background ran")
            await asyncio.Event().wait()

        return Parts(
            None,
            background=[background],
            on_stop=[lambda: events.append("stopping")],
        )

    app = ServiceApp("shell-test", Settings, wire, _no_servicers, keys="message")
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(app.main(_environ(tmp_path, redis_url, port), stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        # The keys were created at start-up (KEYS_CREATE=1) and the Redis it opened answers.
        await wait_for_status(channel, SERVING, within=10)
        assert (tmp_path / "service" / "message.key").exists()
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        assert events == ["background ran"]
        stop.set()
        await asyncio.wait_for(server, 10)
        assert events == ["background ran", "stopping"]
    finally:
        stop.set()
        await channel.close()
        await asyncio.gather(server, return_exceptions=True)


async def test_health_follows_every_redis_the_service_opened(
    tmp_path: Path, redis_url: str
) -> None:
    def wire(start: Start[Settings]) -> Parts[None]:
        start.redis(0)
        return Parts(None)

    app = ServiceApp("shell-test", Settings, wire, _no_servicers, keys="message")
    port, stop = free_port(), asyncio.Event()
    environ = {
        **_environ(tmp_path, redis_url, port),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}",
    }
    server = asyncio.create_task(app.main(environ, stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        await wait_for_status(channel, NOT_SERVING, within=10)
    finally:
        stop.set()
        await channel.close()
        await asyncio.wait_for(server, 10)


async def test_following_revocations_needs_sessions(tmp_path: Path, redis_url: str) -> None:
    def wire(start: Start[Settings]) -> Parts[None]:
        start.redis(0)
        return Parts(None, follow_revocations=True)

    app = ServiceApp("shell-test", Settings, wire, _no_servicers, keys="message")
    with pytest.raises(ValueError, match="follow_revocations needs the sessions"):
        await app.main(_environ(tmp_path, redis_url, free_port()), asyncio.Event())


def _rest_app(
    service: None,
    verifier: TokenVerifier,
    ready: Readiness,
    sessions: Sessions | None = None,
    *,
    max_body_bytes: int = 0,
) -> Any:
    raise AssertionError("the REST app is not built without a port to serve it on")


async def test_a_rest_api_needs_a_rest_port_in_the_settings(tmp_path: Path, redis_url: str) -> None:
    app = ServiceApp(
        "shell-test", Settings, lambda start: Parts(None), _no_servicers, _rest_app, keys="message"
    )
    with pytest.raises(TypeError, match="Settings has no rest_port"):
        await app.main(_environ(tmp_path, redis_url, free_port()), asyncio.Event())
