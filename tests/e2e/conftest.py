"""The running system for end-to-end tests: one per module, started by the real entry points."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers.clients import Stubs
from tests.helpers.system import System


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System.create(tmp_path_factory.mktemp("system"))
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
async def stubs(system: System) -> AsyncIterator[Stubs]:
    await system.wait_healthy()
    connected = Stubs.connect(system)
    yield connected
    await connected.close()


@pytest.fixture
def fresh_system(tmp_path: Path) -> Iterator[System]:
    """A private system for fault tests that stop, kill and restart its parts."""
    running = System.create(tmp_path)
    try:
        yield running
    finally:
        running.close()
