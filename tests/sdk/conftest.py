"""Fixtures of the SDK and CLI tests: a clean environment, a scripted fake, the real system."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.system import System
from tests.sdk.fakes import FakeBackend, FakeServer, serve

PASSWORD = "correct horse battery"


def new_email(prefix: str = "user") -> str:
    """A unique address, so tests sharing one system never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def sdk_env(system: System) -> dict[str, str]:
    """The MISSIVE_* variables that point the SDK and the CLI at ``system``."""
    return {
        "MISSIVE_USER_URL": system.rest_url("user"),
        "MISSIVE_MESSAGE_URL": system.rest_url("message"),
        "MISSIVE_NOTIFICATION_URL": system.rest_url("notification"),
        "MISSIVE_USER_GRPC": system.grpc_addr("user"),
        "MISSIVE_MESSAGE_GRPC": system.grpc_addr("message"),
        "MISSIVE_NOTIFICATION_GRPC": system.grpc_addr("notification"),
        "MISSIVE_FRONTEND_GRPC": system.grpc_addr("frontend"),
    }


def sdk_kwargs(system: System) -> dict[str, str]:
    """The same addresses as Client.connect / AsyncClient arguments."""
    return {key.removeprefix("MISSIVE_").lower(): value for key, value in sdk_env(system).items()}


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MISSIVE_* variable leaks in, and the CLI's config directory is private to the test."""
    for name in list(os.environ):
        if name.startswith("MISSIVE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    """The scripted UserService + MessageService of :mod:`tests.sdk.fakes`."""
    yield from serve(FakeBackend())  # type: ignore[abstract]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The four real services and Valkey, shared by one test module (started lazily)."""
    running = System.create(
        tmp_path_factory.mktemp("system"),
        # A low per-account threshold lets the error tests reach the login throttle quickly;
        # a high per-host one, because every test signs in from 127.0.0.1.
        USER_LOGIN_MAX_FAILURES="3",
        USER_LOGIN_CLIENT_ATTEMPTS="100000",
    )
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
def live(system: System) -> System:
    """``system`` once every service reports SERVING (usable by sync and async tests)."""
    asyncio.run(system.wait_healthy())
    return system


@pytest.fixture
def live_env(live: System, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The MISSIVE_* variables of the live system, also set in this test's environment."""
    env = sdk_env(live)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
