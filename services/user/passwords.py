"""Password policy and Argon2id hashing, bounded in cost and in concurrency."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from services.common.domain import InvalidArgument
from services.common.errors import ConfigError
from services.user.settings import HashParams

logger = logging.getLogger(__name__)

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 128
# 128 characters of at most 4 UTF-8 bytes each; checked separately so the hash input is bounded
# whatever the character limit becomes.
MAX_PASSWORD_BYTES = 512

T = TypeVar("T")


def validate_password(password: str, field: str = "password") -> None:
    """InvalidArgument unless ``password`` is 8-128 characters and at most 512 UTF-8 bytes.

    Runs before any hashing, so an oversized input never reaches Argon2.
    """
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidArgument(
            f"{field} must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters long"
        )
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from a JSON \ud800 escape
        raise InvalidArgument(f"{field} is not valid Unicode text") from None
    if size > MAX_PASSWORD_BYTES:
        raise InvalidArgument(f"{field} must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")


class Passwords:
    """Hashes and verifies passwords in worker threads, at most ``concurrency`` at a time.

    Each Argon2id computation holds ``memory_kib`` of memory, so the semaphore bounds what a
    login storm can allocate. A verification without a stored hash runs against a dummy hash
    computed once here, so an unknown account costs the same time as a wrong password.
    """

    def __init__(self, params: HashParams, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ConfigError(f"hash concurrency must be at least 1, got {concurrency}")
        self.params = params
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    async def hash(self, password: str) -> str:
        """The Argon2id hash of an already validated password."""
        return await self._bounded(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; with no stored hash, False at the same cost."""
        if stored is None:
            await self._bounded(self._check, self._dummy, password)
            return False
        return await self._bounded(self._check, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than the configured ones."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except InvalidHashError:
            logger.warning("a stored password hash is malformed; the sign-in fails")
            return False
        except VerificationError:
            return False

    async def _bounded(self, work: Callable[..., T], *args: str) -> T:
        await self._slots.acquire()
        try:
            job = asyncio.ensure_future(asyncio.to_thread(work, *args))
        except BaseException:
            self._slots.release()
            raise
        # The slot is freed when the thread finishes, not when a cancelled caller gives up:
        # the memory stays allocated until then.
        job.add_done_callback(self._release)
        return await asyncio.shield(job)

    def _release(self, job: asyncio.Future[Any]) -> None:
        self._slots.release()
        if not job.cancelled():
            job.exception()  # retrieved, so an abandoned job logs nothing
