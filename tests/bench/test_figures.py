"""The bench's arithmetic and formatting, in process (no system started)."""

from __future__ import annotations

from tests.bench.__main__ import failed_calls, parse
from tests.bench.figures import figure, table
from tests.bench.loader import percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None


def test_a_figure_has_a_ratio_only_next_to_a_baseline() -> None:
    assert figure("1 send", "throughput", 300.0, "rps", 3000.0, "echo").ratio == 0.1
    assert figure("4 backlog", "drain", 0.5, "s").ratio is None
    assert figure("1 send", "throughput", 300.0, "rps", 0.0, "echo").ratio is None


def test_the_table_shows_value_baseline_and_ratio() -> None:
    text = table([figure("1 send", "throughput", 300.0, "rps", 3000.0, "bare echo")])
    header, rule, row = text.splitlines()
    assert header.startswith("| scenario") and set(rule) <= {"|", "-"}
    assert "300 rps" in row and "3,000 rps (bare echo)" in row and "0.1\u00d7" in row


def test_failed_calls_are_summed_over_every_run() -> None:
    details = {"send": {"errors": 2, "ok": 5}, "rest": {"a": {"missive": {"errors": 1}}}}
    assert failed_calls(details) == 3


def test_scenario_aliases_and_order() -> None:
    options, _ = parse(["--scenarios", "memory,cpu,backlog,e2e", "--duration", "2"])
    assert options.scenarios == ("send", "latency", "memory")
    assert options.duration == 2.0
