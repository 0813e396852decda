"""What the contract fuzzers ran, printed at the end of a pytest run (see ``conftest.py``).

Each fuzzer declares the operations a contract has and records every call it makes with its
outcome (an HTTP status or a gRPC status name); the summary gives, per suite and contract,
the operations covered, the calls made and how they ended.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Report:
    declared: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    calls: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)

    def declare(self, suite: str, target: str, operations: Iterable[str]) -> None:
        """The operations ``target``'s contract has (what full coverage means)."""
        self.declared[(suite, target)].update(operations)

    def record(self, suite: str, target: str, operation: str, outcome: str) -> None:
        self.calls[(suite, target, operation, outcome)] += 1

    def lines(self) -> list[str]:
        by_target: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        covered: dict[tuple[str, str], set[str]] = defaultdict(set)
        for (suite, target, operation, outcome), count in self.calls.items():
            by_target[(suite, target)][outcome] += count
            covered[(suite, target)].add(operation)
        lines = []
        for key in sorted(by_target):  # suites that made calls in this run
            suite, target = key
            outcomes = by_target[key]
            declared = self.declared.get(key) or covered[key]
            missing = sorted(declared - covered[key])
            shown = ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items()))
            line = (
                f"{suite:<18} {target:<13} {len(covered[key] & declared)}/{len(declared)} "
                f"operations, {sum(outcomes.values())} calls ({shown or 'none'})"
            )
            if missing:
                line += f"; not reached: {', '.join(missing)}"
            lines.append(line)
        return lines


REPORT = Report()
