"""Password policy and Argon2id hashing: parameters, byte limits, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from services.common.domain import InvalidArgument
from services.common.errors import ConfigError
from services.user import passwords
from services.user.passwords import Passwords, validate_password
from services.user.settings import HashParams


@pytest.mark.parametrize("password", ["a" * 8, "a" * 128, "\U0001f600" * 128, "pass word"])
def test_accepted_passwords(password: str) -> None:
    validate_password(password)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", "8 to 128 characters"),
        ("a" * 7, "8 to 128 characters"),
        ("a" * 129, "8 to 128 characters"),
        ("x" * (1024 * 1024), "8 to 128 characters"),
        ("abcdefg\ud800", "not valid Unicode"),
    ],
)
def test_rejected_passwords(password: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        validate_password(password)


def test_byte_length_is_checked_separately(monkeypatch: pytest.MonkeyPatch) -> None:
    # 128 characters never exceed 512 bytes; a tighter byte limit shows the bytes are counted.
    monkeypatch.setattr(passwords, "MAX_PASSWORD_BYTES", 30)
    validate_password("a" * 30)
    validate_password("\u00e9" * 15)  # 15 characters, 30 bytes
    with pytest.raises(InvalidArgument, match="at most 30 bytes"):
        validate_password("\u00e9" * 16)  # 16 characters, 32 bytes


def test_parameters_below_owasp_are_refused() -> None:
    for params in (
        {"time_cost": 1},
        {"memory_kib": 19455},
        {"parallelism": 0},
    ):
        with pytest.raises(ConfigError, match="below the minimum"):
            HashParams(**params)


async def test_hash_uses_argon2id_with_the_configured_parameters() -> None:
    hashing = Passwords(HashParams())
    stored = await hashing.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await hashing.verify(stored, "correct horse")
    assert not await hashing.verify(stored, "wrong horse!")
    assert not await hashing.verify(None, "correct horse")
    assert not await hashing.verify("not-a-hash", "correct horse")
    assert not hashing.needs_rehash(stored)
    assert Passwords(HashParams(time_cost=3)).needs_rehash(stored)
    assert hashing.needs_rehash("not-a-hash")


async def test_verification_without_a_user_costs_a_real_verification() -> None:
    hashing = Passwords(HashParams())
    stored = await hashing.hash("correct horse")

    async def timed(stored_hash: str | None) -> float:
        start = time.perf_counter()
        for _ in range(3):
            await hashing.verify(stored_hash, "wrong horse!")
        return time.perf_counter() - start

    known, unknown = await timed(stored), await timed(None)
    assert 0.5 < unknown / known < 2.0


class SlowHasher:
    """Stands in for argon2 to observe how many computations run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return "hashed"


async def test_concurrency_is_bounded() -> None:
    hashing = Passwords(HashParams(), concurrency=2)
    slow = SlowHasher()
    hashing._hasher = slow  # type: ignore[assignment]
    results = await asyncio.gather(*(hashing.hash("password") for _ in range(8)))
    assert results == ["hashed"] * 8
    assert slow.peak == 2


async def test_a_cancelled_caller_keeps_its_slot_until_the_thread_ends() -> None:
    hashing = Passwords(HashParams(), concurrency=1)
    slow = SlowHasher()
    hashing._hasher = slow  # type: ignore[assignment]
    first = asyncio.create_task(hashing.hash("password"))
    await asyncio.sleep(0.01)
    first.cancel()
    second: Any = asyncio.create_task(hashing.hash("password"))
    assert await second == "hashed"
    assert slow.peak == 1
    with pytest.raises(asyncio.CancelledError):
        await first


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        Passwords(HashParams(), concurrency=0)
