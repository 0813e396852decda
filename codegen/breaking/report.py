"""The whole check: both diffs over the old and current contract trees, the allowlist, and the
report the CLI prints."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from codegen.breaking.change import Change
from codegen.breaking.git import default_ref, export_contracts, resolve_ref
from codegen.breaking.openapi_diff import compare_openapi, documents
from codegen.breaking.proto_diff import compare_protos, compile_protos
from codegen.errors import ContractError

ALLOWLIST = "contracts-breaking-allow.txt"


@dataclass(frozen=True)
class Allowlist:
    entries: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Allowlist:
        """`ELEMENT  # reason` per line; blank lines and `#` lines are ignored."""
        if not path.exists():
            return cls({})
        entries = {}
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            element, _, rest = line.partition(" ")
            reason = rest.strip().removeprefix("#").strip()
            if not rest.strip().startswith("#") or not reason:
                raise ContractError(
                    f"{path.name}:{number}: expected `ELEMENT  # why the break is intended`, "
                    f"got {raw!r}"
                )
            entries[element] = reason
        return cls(entries)


@dataclass
class Report:
    against: str
    breaking: list[Change]
    allowed: list[tuple[Change, str]]
    unused: list[str]


def compare_trees(old_root: Path, new_root: Path, scratch: Path) -> list[Change]:
    """Every breaking change from the contracts under `old_root` to those under `new_root`."""
    try:
        old_set = compile_protos(old_root / "proto_definitions", scratch / "old")
        old_docs = documents(old_root)
    except ContractError as exc:
        raise ContractError(f"the old contracts do not load: {exc}") from exc
    new_set = compile_protos(new_root / "proto_definitions", scratch / "new")
    new_docs = documents(new_root)
    changes = compare_protos(old_set, new_set)
    for display in sorted(old_docs.keys() | new_docs.keys()):
        changes += compare_openapi(old_docs.get(display), new_docs.get(display))
    return sorted(set(changes))


def check(root: Path, ref: str | None) -> Report | None:
    """Compare the contracts under `root` with those at `ref` (None: the default); None if
    there is nothing to compare with."""
    if ref is None:
        found = default_ref(root)
        if found is None:
            return None
        commit, description = found
    else:
        commit, description = resolve_ref(root, ref), ref
    allowlist = Allowlist.load(root / ALLOWLIST)
    with tempfile.TemporaryDirectory(prefix="codegen-breaking-") as tmp:
        old_root = Path(tmp) / "old"
        old_root.mkdir()
        export_contracts(root, commit, old_root)
        changes = compare_trees(old_root, root, Path(tmp) / "scratch")
    breaking = [c for c in changes if c.element not in allowlist.entries]
    allowed = [(c, allowlist.entries[c.element]) for c in changes if c.element in allowlist.entries]
    used = {c.element for c, _ in allowed}
    unused = [element for element in allowlist.entries if element not in used]
    return Report(f"{description} ({commit[:12]})", breaking, allowed, unused)


def render(report: Report) -> Iterator[tuple[bool, str]]:
    """(is_error, line) pairs for the CLI."""
    for change, reason in report.allowed:
        yield False, f"allowed: {change.file}:{change.line}: {change.what}  # {reason}"
    for element in report.unused:
        yield False, f"note: {ALLOWLIST} lists {element}, which no longer changes; remove it"
    if not report.breaking:
        yield False, f"check-breaking: no breaking contract changes against {report.against}"
        return
    count = len(report.breaking)
    plural = "change" if count == 1 else "changes"
    yield True, f"check-breaking: {count} breaking {plural} against {report.against}:"
    for change in report.breaking:
        yield True, "  " + change.render()
    yield (
        True,
        (
            f"check-breaking: if a change is intended, list its element in {ALLOWLIST} "
            "followed by `# why`"
        ),
    )
