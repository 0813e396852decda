"""Prints what the contract fuzzers ran, and each failure with its minimal reproducer."""

from __future__ import annotations

import pytest

from tests.contract.report import REPORT

_REPRODUCER_MARKERS = ("Reproduce with:", "Falsifying example", "Falsifying explicit example")


def _reproducer(text: str) -> list[str]:
    """The lines of a failure that reproduce it: schemathesis' curl command, or Hypothesis'
    minimal (shrunk) falsifying example and the assertion it broke."""
    lines = [line.strip(" |+") for line in text.splitlines()]
    found: list[str] = []
    for index, line in enumerate(lines):
        if line.startswith("Reproduce with:"):
            found += [next((x for x in lines[index + 1 :] if x.strip()), "").strip()]
        elif line.startswith(_REPRODUCER_MARKERS[1:]):
            found += [x for x in lines[index : index + 8] if x.strip()]
        elif line.startswith("E ") and not found:
            found.append(line)
    return found[:12]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = REPORT.lines()
    if not lines:
        return
    terminalreporter.section("contract fuzzing summary")
    for line in lines:
        terminalreporter.write_line(line)
    failed = [
        report
        for report in terminalreporter.stats.get("failed", [])
        if "tests/contract/" in getattr(report, "nodeid", "")
    ]
    terminalreporter.write_line(f"failures: {len(failed) or 'none'}")
    for report in failed:
        terminalreporter.write_line(f"- {report.nodeid}")
        for line in _reproducer(report.longreprtext):
            terminalreporter.write_line(f"    {line}")
