"""The installed `missive` command's exit codes against the real system: a throttled sign-in,
and `status` while one service hangs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import missive_client as mc
import pytest
from missive_client.cli._app import EXIT_AUTH, EXIT_UNAVAILABLE

from tests.helpers.system import System
from tests.sdk.conftest import PASSWORD, new_email
from tests.sdk.helpers import async_client, connect

pytestmark = pytest.mark.e2e

MISSIVE = Path(sys.executable).with_name("missive")


def missive(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MISSIVE), *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_a_throttled_sign_in_exits_with_the_credentials_code(
    live_env: dict[str, str], live: System, transport: str
) -> None:
    email = new_email("locked")
    with connect(live) as client:
        client.users.register("Locked", email, PASSWORD)
    login = ("--transport", transport, "login", email, "--password-stdin")
    # The system under test allows 3 failed sign-ins per account (USER_LOGIN_MAX_FAILURES).
    for _ in range(3):
        wrong = missive(live_env, *login, stdin="wrong password!\n")
        assert wrong.returncode == EXIT_AUTH, wrong.stderr
    locked = missive(live_env, *login, stdin="wrong password!\n")
    assert locked.returncode == EXIT_AUTH, locked.stderr
    [line] = locked.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in locked.stderr
    assert re.search(r"(retry|try again) in \d+", line), line  # when to try again
    # Locked means locked: the right password is refused the same way until the wait is over.
    still = missive(live_env, *login, stdin=f"{PASSWORD}\n")
    assert still.returncode == EXIT_AUTH, still.stderr
    assert re.search(r"(retry|try again) in \d+", still.stderr), still.stderr


def test_status_answers_quickly_when_a_service_hangs(
    live_env: dict[str, str], live: System
) -> None:
    started = time.monotonic()
    healthy = missive(live_env, "status")
    baseline = time.monotonic() - started  # the command's own start-up and a quick check
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    process = live.services["message"].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)  # accepts connections (the kernel does), answers none
    try:
        started = time.monotonic()
        hung = missive(live_env, "status", "--json")
        elapsed = time.monotonic() - started
    finally:
        os.kill(process.pid, signal.SIGCONT)
    assert hung.returncode == EXIT_UNAVAILABLE, hung.stdout + hung.stderr
    # Checked in parallel with a 2 s deadline each: about 2 s more than a healthy run.
    assert elapsed < baseline + 3.0, f"status took {elapsed:.1f} s (healthy: {baseline:.1f} s)"
    serving = {
        (item["service"], item["transport"]): item["serving"] for item in json.loads(hung.stdout)
    }
    assert serving.pop(("MessageService", "grpc")) is False
    assert serving.pop(("MessageService", "rest")) is False
    assert serving and all(serving.values()), hung.stdout
    asyncio.run(live.wait_healthy("message"))


def test_the_sdk_status_reports_a_hung_service_within_the_deadline(live: System) -> None:
    process = live.services["notification"].process
    assert process is not None
    with connect(live) as client:
        os.kill(process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = client.status()
            elapsed = time.monotonic() - started
        finally:
            os.kill(process.pid, signal.SIGCONT)
    assert elapsed < 3.5, f"status took {elapsed:.1f} s"
    hung = [item for item in results if item.service == "NotificationService"]
    assert len(hung) == 2 and not any(item.serving for item in hung), results
    assert all(item.serving for item in results if item not in hung), results
    asyncio.run(live.wait_healthy("notification"))


async def test_the_async_status_reports_a_hung_service_within_the_deadline(
    live: System,
) -> None:
    process = live.services["user"].process
    assert process is not None
    async with async_client(live) as client:
        os.kill(process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = await client.status()
            elapsed = time.monotonic() - started
        finally:
            os.kill(process.pid, signal.SIGCONT)
    assert elapsed < 3.5, f"status took {elapsed:.1f} s"
    assert [item.serving for item in results if item.service == "UserService"] == [False, False]
    await live.wait_healthy("user")
    assert isinstance(results[0], mc.ServiceHealth)


def test_a_throttled_line_without_a_wait_gets_one_from_retry_after() -> None:
    from missive_client.cli._common import throttled_sign_in

    bare = mc.RateLimited("too many failed sign-in attempts", retry_after=4.2)
    assert throttled_sign_in(bare) == "too many failed sign-in attempts (try again in 5 s)"
    worded = mc.RateLimited("locked; retry in 30 seconds", retry_after=30)
    assert throttled_sign_in(worded) == "locked; retry in 30 seconds"
    assert throttled_sign_in(mc.RateLimited("locked")) == "locked"
