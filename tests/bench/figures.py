"""Figures of a bench run: each value next to its same-run baseline, as a table and as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Figure:
    """One measured value; ``baseline`` is what the bare counterpart gave in the same run."""

    scenario: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_of: str = ""
    ratio: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def figure(
    scenario: str,
    name: str,
    value: float | None,
    unit: str,
    baseline: float | None = None,
    baseline_of: str = "",
) -> Figure:
    """A figure; the ratio is value / baseline when both are known."""
    ratio = value / baseline if value is not None and baseline else None
    return Figure(scenario, name, value, unit, baseline, baseline_of, ratio)


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if float(value).is_integer() and unit in ("entries", ""):
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(figures: list[Figure]) -> str:
    """A Markdown table (it reads in a terminal and pastes into the README)."""
    rows = [("scenario", "figure", "value", "same-run baseline", "ratio")]
    for f in figures:
        baseline = f"{_number(f.baseline, f.unit)} ({f.baseline_of})" if f.baseline_of else "-"
        ratio = "-" if f.ratio is None else f"{f.ratio:.3g}\u00d7"
        rows.append((f.scenario, f.name, _number(f.value, f.unit), baseline, ratio))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
