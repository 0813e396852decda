"""The package README's examples run against the real system and pass mypy --strict."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sdk.test_typing import mypy_strict

ROOT = Path(__file__).resolve().parents[2]
SDK_README = ROOT / "clients" / "python" / "README.md"
ROOT_README = ROOT / "README.md"

_FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_examples(path: Path) -> list[str]:
    """The ```python blocks of ``path`` that use the SDK."""
    return [block for block in _FENCE.findall(path.read_text()) if "missive_client" in block]


def all_examples() -> list[tuple[str, str]]:
    """(label, code) of every SDK example: the package README's, then the root README's."""
    found = [(f"sdk-readme-{n}", code) for n, code in enumerate(python_examples(SDK_README))]
    found += [(f"root-readme-{n}", code) for n, code in enumerate(python_examples(ROOT_README))]
    return found


def test_the_package_readme_has_the_documented_examples() -> None:
    examples = python_examples(SDK_README)
    assert len(examples) >= 4
    quickstart = examples[0]
    for step in ("users.register", "login", "messages.send", "notifications.watch"):
        assert step in quickstart, step
    body = [line for line in quickstart.splitlines() if line.strip() and "import" not in line]
    assert len(body) <= 12  # "a ten-line snippet"


@pytest.mark.e2e
def test_readme_examples_run_against_the_live_system(
    live_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**os.environ, **live_env}
    for label, code in all_examples():  # in order: later examples use earlier users
        script = tmp_path / f"{label}.py"
        script.write_text(code)
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{label} failed:\n{code}\n{done.stdout}\n{done.stderr}"
        if label == "sdk-readme-0":
            assert "new message from alice@example.com" in done.stdout


def test_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    files = []
    for label, code in all_examples():
        path = tmp_path / f"{label.replace('-', '_')}.py"
        path.write_text(code)
        files.append(path)
    result = mypy_strict(tmp_path, *files)
    assert result.returncode == 0, result.stdout + result.stderr
