"""Fixtures for codegen tests: throwaway copies of the project's contracts and generated tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPIED = (
    "pyproject.toml",
    "proto_definitions",
    "openapi",
    "generated",
    "clients/python/missive_client",
)


def run_codegen(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codegen", "--root", str(root), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every generated file under root, by relative path."""
    files = {}
    for top in ("generated", "clients/python/missive_client/_generated"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the contracts, the committed generated code and the SDK."""
    for rel in COPIED:
        source, target = ROOT / rel, tmp_path / rel
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            continue
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


Runner = Callable[..., subprocess.CompletedProcess[str]]
