"""`mypy --strict` accepts a program using the SDK, and rejects one that misuses its types."""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import missive_client
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


def application_python(directory: Path) -> Path:
    """An interpreter whose site-packages holds the SDK as a regular install would.

    The repository installs the SDK in editable mode through an import hook, which type
    checkers cannot follow; a .pth path entry is what they read, as for a wheel install.
    """
    env_dir = directory / "app-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sdk_root = Path(missive_client.__file__).resolve().parents[1]
    dependencies = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    lines = [str(sdk_root), *sorted(dependencies)]
    (Path(purelib) / "missive_sdk.pth").write_text("\n".join(lines) + "\n")
    return python


def mypy_strict(directory: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """Run mypy --strict where no project configuration applies, as an application would."""
    python = application_python(directory)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            f"--python-executable={python}",
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
