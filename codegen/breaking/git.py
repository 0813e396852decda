"""Git plumbing for the breaking-change check: which commit to compare with, and the contracts
as they were at it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from codegen.errors import ContractError

CONTRACT_DIRS = ("proto_definitions", "openapi")


class GitError(ContractError):
    """The ref cannot be read (not a repository, unknown ref, ...)."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:  # no git at all: as if every command failed
        return subprocess.CompletedProcess(["git", *args], 127, b"", str(exc).encode())


def _out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode().strip()


def default_ref(root: Path) -> tuple[str, str] | None:
    """(commit, description) to compare with: merge base with `main`, else `HEAD~`, else None."""
    base = _git(root, "merge-base", "HEAD", "main")
    if base.returncode == 0 and _out(base):
        return _out(base), "the merge base with main"
    parent = _git(root, "rev-parse", "--verify", "--quiet", "HEAD~^{commit}")
    if parent.returncode == 0 and _out(parent):
        return _out(parent), "HEAD~ (no branch `main` to take a merge base with)"
    return None


def resolve_ref(root: Path, ref: str) -> str:
    result = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode != 0 or not _out(result):
        reason = result.stderr.decode().strip() or "no such commit"
        raise GitError(f"cannot compare with {ref!r}: {reason}")
    return _out(result)


def export_contracts(root: Path, commit: str, dest: Path) -> None:
    """Write `proto_definitions/` and `openapi/` as they are at `commit` under `dest`."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise GitError(f"{root} is not in a git repository")
    toplevel = Path(_out(top))
    prefix = root.resolve().relative_to(toplevel.resolve()).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    for directory in CONTRACT_DIRS:
        listing = _git(
            toplevel, "ls-tree", "-r", "-z", "--name-only", commit, "--", prefix + directory
        )
        if listing.returncode != 0:
            raise GitError(f"git ls-tree {commit}: {listing.stderr.decode().strip()}")
        for name in filter(None, listing.stdout.decode().split("\0")):
            shown = _git(toplevel, "show", f"{commit}:{name}")
            if shown.returncode != 0:
                raise GitError(f"git show {commit}:{name}: {shown.stderr.decode().strip()}")
            target = dest / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(shown.stdout)
