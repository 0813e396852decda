"""The operators tool, run as an operator runs it: ``python -m services.user.operators``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from redis.asyncio import Redis

from services.common.domain import Principal
from services.user.service import UserService
from tests.unit.user.conftest import ALICE, ALICE_PASSWORD

ROOT = Path(__file__).resolve().parents[3]


async def operators(redis_url: str, keys: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "USER_REDIS_DB": "0", "KEYS_DIR": str(keys)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.user.operators",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_grant_and_revoke_the_operator_role(
    service: UserService, redis: Redis, redis_url: str, keys: Path
) -> None:
    await service.register("Alice", ALICE, ALICE_PASSWORD)
    alice = Principal("user", ALICE)
    code, out, _ = await operators(redis_url, keys, "grant", " Alice@Example.com ")
    assert (code, out.strip()) == (0, f"{ALICE}: operator")
    assert [u.email for u in (await service.list_users(None, None, alice))[0]] == [ALICE]
    code, out, _ = await operators(redis_url, keys, "revoke", ALICE)
    assert (code, out.strip()) == (0, f"{ALICE}: ordinary user")
    assert '"role"' not in str(await redis.get(f"user:{ALICE}"))


async def test_an_unknown_or_malformed_email_is_one_line_and_exit_2(
    redis_url: str, keys: Path, redis: Redis
) -> None:
    for email in ("nobody@example.com", "not-an-email"):
        code, out, err = await operators(redis_url, keys, "grant", email)
        assert code == 2 and out == ""
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert await redis.dbsize() == 0
