"""A service's start-up prints only Missive's own lines: no library warnings.

Run with Python's default warning filters (no pytest filters, no PYTHONWARNINGS), as `make up`,
the containers and an operator run them.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.system import ROOT, System

ENTRY_POINTS = ("user", "message", "notification", "frontend", "web")

# What a Python warning looks like on stderr: "<file>:<line>: SomeWarning: text".
WARNING_LINE = re.compile(r"^.*:\d+: \w*Warning: ", re.MULTILINE)


def _default_warnings_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONWARNINGS", "PYTHONDEVMODE"}
    }


@pytest.mark.parametrize("service", ENTRY_POINTS)
def test_loading_a_service_prints_nothing(service: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", f"import services.{service}.__main__"],
        cwd=ROOT,
        env=_default_warnings_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stderr == ""
    assert loaded.stdout == ""


@pytest.mark.e2e
@pytest.mark.slow
def test_starting_the_system_logs_no_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    monkeypatch.delenv("PYTHONDEVMODE", raising=False)
    system = System.create(tmp_path, web=True)
    try:
        system.start()
        asyncio.run(system.wait_healthy())
    finally:
        system.close()
    for name, service in system.services.items():
        log = service.log_path.read_text(errors="replace")
        assert log, f"{name} logged nothing"
        assert not WARNING_LINE.search(log), f"{name} printed a warning:\n{log}"
        assert "Traceback" not in log, log
