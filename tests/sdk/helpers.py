"""Small helpers of the SDK end-to-end tests: users on the real system, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import missive_client as mc

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD, new_email, sdk_kwargs

T = TypeVar("T")


def connect(system: System, **options: Any) -> mc.Client:
    """A blocking client of ``system``."""
    return mc.Client.connect(**{**sdk_kwargs(system), **options})


def async_client(system: System, **options: Any) -> mc.AsyncClient:
    """An asyncio client of ``system``."""
    return mc.AsyncClient(**{**sdk_kwargs(system), **options})


def signed_in(system: System, name: str, **options: Any) -> mc.Client:
    """A client of a newly registered user, signed in."""
    client = connect(system, **options)
    email = new_email(name.lower())
    client.users.register(name, email, PASSWORD)
    client.login(email, PASSWORD)
    return client


async def async_signed_in(system: System, name: str, **options: Any) -> mc.AsyncClient:
    """An asyncio client of a newly registered user, signed in."""
    client = async_client(system, **options)
    email = new_email(name.lower())
    await client.users.register(name, email, PASSWORD)
    await client.login(email, PASSWORD)
    return client


def eventually(check: Callable[[], T | None], within: float = 10.0) -> T:
    """Poll ``check`` until it returns something truthy (the relays deliver asynchronously)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {check}")
        time.sleep(0.05)


async def eventually_async(check: Callable[[], Awaitable[T | None]], within: float = 10.0) -> T:
    """The asyncio form of :func:`eventually`."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s: {check}")
        await asyncio.sleep(0.05)
