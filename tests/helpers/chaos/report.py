"""Per-scenario results of a chaos run, and the summary table printed at the end of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.helpers.chaos.checker import Check, Figures


@dataclass
class ScenarioResult:
    """What one scenario did and what the checker found; ``violations`` lists failed criteria."""

    name: str
    ops: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    check: Check = field(default_factory=Check)
    streams: int = 0
    connections: int = 0
    dead_letters: int = 0
    drain_s: float | None = None  # from the last heal / last reply until everything arrived
    codes: dict[str, int] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # scenario-specific measurements
    violations: list[str] = field(default_factory=list)

    def require(self, condition: bool, criterion: str) -> None:
        """Record ``criterion`` as violated unless ``condition`` holds."""
        if not condition:
            self.violations.append(criterion)

    @property
    def passed(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        lines = [
            f"scenario {self.name}: {'PASS' if self.passed else 'FAIL'}",
            f"  ops {self.ops}: ok {self.ok}, fail {self.fail}, info {self.info}"
            f" (recovered {self.check.recovered}); status codes {self.codes}",
            f"  messages:      {self.check.messages}",
            f"  notifications: {self.check.notifications}",
            f"  streams ({self.streams}, {self.connections} connections): {self.check.streams}",
            f"  dead letters {self.dead_letters}; drain "
            + (f"{self.drain_s:.2f}s" if self.drain_s is not None else "never"),
        ]
        if self.check.allowed_lost:
            lines.append(
                f"  lost inside the durability window (allowed): {self.check.allowed_lost}"
            )
        for email, figures in self.check.per_stream.items():
            if not figures.clean:
                lines.append(f"  stream of {email}: {figures}")
        for key, value in self.figures.items():
            lines.append(f"  {key}: {value}")
        for label, figures in (
            ("messages", self.check.messages),
            ("notifications", self.check.notifications),
            ("streams", self.check.streams),
        ):
            for example in figures.examples:
                lines.append(f"  e.g. {label} {example}")
        for problem in (self.check.incomplete + self.check.invariants)[:10]:
            lines.append(f"  structure: {problem}")
        for violation in self.violations:
            lines.append(f"  VIOLATED: {violation}")
        return "\n".join(lines)


RESULTS: list[ScenarioResult] = []
"""Every scenario result of this pytest session, for the summary."""

_COLUMNS = (
    "scenario",
    "result",
    "ops",
    "ok/fail/info",
    "msg l/d/u",
    "notif l/d/u",
    "stream l/d/u",
    "dead",
    "drain",
)


def _triple(figures: Figures) -> str:
    return f"{figures.lost}/{figures.duplicated}/{figures.unexpected}"


def summary(results: list[ScenarioResult]) -> str:
    """The table: one line per scenario (l/d/u = lost/duplicated/unexpected)."""
    rows = [_COLUMNS]
    for r in results:
        rows.append(
            (
                r.name,
                "PASS" if r.passed else "FAIL",
                str(r.ops),
                f"{r.ok}/{r.fail}/{r.info}",
                _triple(r.check.messages),
                _triple(r.check.notifications),
                _triple(r.check.streams),
                str(r.dead_letters),
                f"{r.drain_s:.1f}s" if r.drain_s is not None else "never",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    for r in results:
        if r.figures:
            lines.append(f"{r.name}: " + "; ".join(f"{k} {v}" for k, v in r.figures.items()))
    for r in results:
        if r.violations:
            lines.append(f"{r.name} VIOLATED: " + "; ".join(r.violations))
    return "\n".join(lines)
