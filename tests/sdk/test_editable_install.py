"""`make install`'s editable install is quiet, and `mypy --strict` finds the SDK through it.

The install runs the Makefile's own pip command into a fresh virtual environment (its
dependencies come from the project's environment: nothing is downloaded), then type-checks a
program outside the repository's mypy configuration against that environment, as an
application's CI would.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
from missive_client import Client, Message


def newest(client: Client) -> Message | None:
    return next(iter(client.messages.list(page_size=1)), None)
"""

# Dependencies and build backend are the project environment's: nothing to fetch or isolate.
OFFLINE = ("--no-deps", "--no-build-isolation", "--no-index")
MYPY = (sys.executable, "-m", "mypy", "--strict", "--no-incremental")


def _makefile_pip_command() -> list[str]:
    """The Makefile's editable pip command (``PIP_EDITABLE``), as words."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^PIP_EDITABLE := (.*?)(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    assert match, "Makefile defines PIP_EDITABLE"
    return shlex.split(match.group(1).replace("\\\n", " "))


def _fresh_environment(directory: Path) -> Path:
    env_dir = directory / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (and pip, setuptools) of the project's environment; its own editable
    # installs are not seen, as a path entry's .pth files are not read.
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.mark.slow
def test_the_editable_install_is_quiet_and_mypy_strict_finds_the_sdk(tmp_path: Path) -> None:
    python = _fresh_environment(tmp_path)
    words = _makefile_pip_command()
    assignments = dict(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    command = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    assert command[:4] == ["$(BIN)/python", "-m", "pip", "install"], command
    command[0] = str(python)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    installed = subprocess.run(
        [*command, *OFFLINE, "-e", ".", "-e", "clients/python"],
        cwd=ROOT,
        env={**env, **assignments},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # Only Missive's own lines: pip and setuptools say nothing on success.
    assert installed.stdout + installed.stderr == ""

    program = tmp_path / "app.py"
    program.write_text(PROGRAM)
    checked = subprocess.run(
        [*MYPY, f"--python-executable={python}", str(program)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 1 source file" in checked.stdout

    # The program runs against the same install (the services' packages are there too).
    imported = subprocess.run(
        [str(python), "-c", "import missive_client, services, missive; print('ok')"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.stdout == "ok\n", imported.stderr
