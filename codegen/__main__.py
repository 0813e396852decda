"""`python -m codegen`: regenerate everything from the contracts, or `--check` for drift."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen.errors import ContractError
from codegen.generate import build, diff, staging_dir, swap_in


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codegen",
        description="Generate gRPC stubs, REST interfaces and SDK layers from the contracts.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary tree and fail if the committed tree differs",
    )
    parser.add_argument(
        "--root", type=Path, default=Path.cwd(), help="project root (default: current directory)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    with staging_dir(root) as tmp:
        staging = Path(tmp)
        try:
            build(root, staging)
        except ContractError as exc:
            print(f"codegen: error: {exc}", file=sys.stderr)
            print("codegen: the generated tree was left untouched", file=sys.stderr)
            return 1
        if args.check:
            report = diff(root, staging)
            if report:
                print("codegen: generated code is out of date:", file=sys.stderr)
                for line in report:
                    print(f"  {line}", file=sys.stderr)
                print("codegen: run `make codegen` and commit the result", file=sys.stderr)
                return 1
            print("codegen: generated code is up to date")
            return 0
        swap_in(root, staging)
    print("codegen: regenerated generated/ and clients/python/missive_client/_generated/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
