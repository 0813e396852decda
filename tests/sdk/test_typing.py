"""`mypy --strict` accepts a program using the SDK, and rejects one that misuses its types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent

MISUSE = """
from missive_client import Client

with Client.connect() as client:
    message = client.messages.send("bob@example.com", "hi")
    total: int = message.id + message.content
    client.messages.send(to=42, content="x")
    client.users.get().nickname
"""


def mypy_strict(directory: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """Run mypy --strict where no project configuration applies, as an application would.

    The SDK is found through the environment's editable install (`make install`), as an
    application developed beside it finds it.
    """
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            f"--python-executable={sys.executable}",
            *map(str, files),
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_program_using_the_sdk_passes_mypy_strict(tmp_path: Path) -> None:
    program = tmp_path / "uses_sdk.py"
    program.write_text((HERE / "typed_program.py").read_text())
    result = mypy_strict(tmp_path, program)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


@pytest.mark.slow
def test_misusing_the_sdk_fails_mypy_strict(tmp_path: Path) -> None:
    program = tmp_path / "misuse.py"
    program.write_text(MISUSE)
    result = mypy_strict(tmp_path, program)
    assert result.returncode == 1
    assert 'Unsupported operand types for + ("int" and "str")' in result.stdout
    assert 'Argument "to" to "send" of "Messages" has incompatible type "int"' in result.stdout
    assert '"User" has no attribute "nickname"' in result.stdout
