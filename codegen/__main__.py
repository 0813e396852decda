"""`python -m codegen`: regenerate everything from the contracts, `--check` for drift, or
`--breaking [REF]` for wire- and JSON-breaking contract changes against a git ref."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen import breaking, sdk_sync
from codegen.errors import ContractError
from codegen.generate import build, diff, staging_dir, swap_in

_DEFAULT_REF = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codegen",
        description="Generate gRPC stubs, REST interfaces and SDK layers from the contracts.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary tree and fail if the committed tree differs",
    )
    mode.add_argument(
        "--breaking",
        nargs="?",
        const=_DEFAULT_REF,
        metavar="REF",
        help="report wire- or JSON-breaking changes of the contracts against git REF (default: "
        "the merge base with main, else HEAD~) and fail unless each one is listed in "
        f"{breaking.ALLOWLIST}",
    )
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="project root (default: current directory)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    if args.breaking is not None:
        return check_breaking(root, args.breaking or None)
    with staging_dir(root) as tmp:
        staging = Path(tmp)
        try:
            build(root, staging)
            sdk_sync.build(root, staging)
        except ContractError as exc:
            print(f"codegen: error: {exc}", file=sys.stderr)
            print("codegen: the generated tree was left untouched", file=sys.stderr)
            return 1
        if args.check:
            report = diff(root, staging) + sdk_sync.diff(root, staging)
            if report:
                print("codegen: generated code is out of date:", file=sys.stderr)
                for line in report:
                    print(f"  {line}", file=sys.stderr)
                print("codegen: run `make codegen` and commit the result", file=sys.stderr)
                return 1
            print("codegen: generated code is up to date")
            return 0
        swap_in(root, staging)
        sdk_sync.swap_in(root, staging)
    print("codegen: regenerated generated/ and clients/python/missive_client/_generated/")
    return 0


def check_breaking(root: Path, ref: str | None) -> int:
    """0 when nothing breaks (or every break is allowlisted), 1 on a break, 2 on an error."""
    try:
        report = breaking.check(root, ref)
    except ContractError as exc:
        print(f"check-breaking: error: {exc}", file=sys.stderr)
        return 2
    if report is None:
        print("check-breaking: nothing to compare with (no merge base with main and no HEAD~)")
        return 0
    for is_error, line in breaking.render(report):
        print(line, file=sys.stderr if is_error else sys.stdout)
    return 1 if report.breaking else 0


if __name__ == "__main__":
    sys.exit(main())
