"""Chaos scenarios: the fast subset runs in every `pytest` run, the rest with `make chaos`.

Tests marked ``chaos_deep`` are deselected unless ``MISSIVE_CHAOS=deep`` (what `make chaos`
sets); scenarios that run in both modes use full-scale workloads when it is set. A summary of
every scenario (operations, outcomes, lost / duplicated / unexpected, time to drain) is
printed at the end of the session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.chaos.cluster import ChaosSystem
from tests.helpers.chaos.report import RESULTS, summary
from tests.helpers.chaos.run import ChaosRun, deep


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if deep():
        return
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if item.get_closest_marker("chaos_deep") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.section("chaos scenarios")
        terminalreporter.write_line(
            "l/d/u = lost/duplicated/unexpected; drain = from the last heal or reply"
        )
        for line in summary(RESULTS).splitlines():
            terminalreporter.write_line(line)


@pytest.fixture
async def chaos(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ChaosRun]:
    """A private system (Valkey + four service processes) and the run that faults it."""
    system = ChaosSystem.create(tmp_path)
    run = ChaosRun(request.node.name.removeprefix("test_"), system)
    try:
        yield run
    finally:
        await run.close()
        system.close()
