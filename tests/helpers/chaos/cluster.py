"""The system under chaos: Valkey and the four services as separate processes, each faultable.

Extends :class:`tests.helpers.system.System` (each service started by its real entry point,
``python -m services.<svc>``, on fixed ports) with the nemesis operations: SIGKILL, SIGSTOP /
SIGCONT, SIGTERM with an exit-time measurement, and the same for the embedded valkey-server,
which is restarted on the same port and the same AOF directory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.system import System

VALKEY = "valkey"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ChaosSystem(System):
    """A :class:`System` whose processes can be killed, paused, resumed and restarted."""

    paused: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, base: Path, *, web: bool = False, **extra_env: str) -> ChaosSystem:
        system = super().create(base, web=web, **extra_env)
        assert isinstance(system, ChaosSystem)
        return system

    def pid(self, name: str) -> int:
        """The process id of a running service, or of Valkey (``"valkey"``)."""
        if name == VALKEY:
            pid = self.valkey.pid
        else:
            process = self.services[name].process
            pid = process.pid if process is not None and process.poll() is None else None
        if pid is None:
            raise AssertionError(f"{name} is not running")
        return pid

    def pause(self, name: str) -> None:
        """SIGSTOP: the process keeps its sockets but answers nothing (a hung process)."""
        os.kill(self.pid(name), signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid(name), signal.SIGCONT)
        self.paused.discard(name)

    async def terminate(self, name: str, within: float = 30.0) -> float:
        """SIGTERM a service and wait (without blocking the event loop) until it exits;
        the seconds it took."""
        svc = self.services[name]
        process = svc.process
        assert process is not None and process.poll() is None, f"{name} is not running"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            while process.poll() is None:
                if time.monotonic() - started > within:
                    process.kill()
                    process.wait()
                    raise AssertionError(f"{name} did not exit within {within:g}s of SIGTERM")
                await asyncio.sleep(0.01)
        finally:
            svc.process = None
        return time.monotonic() - started

    def exit_code(self, name: str) -> int | None:
        process = self.services[name].process
        return None if process is None else process.poll()

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time the process has used so far (from /proc)."""
        fields = Path(f"/proc/{self.pid(name)}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    # -- Valkey ------------------------------------------------------------------------------

    def kill_valkey(self) -> None:
        """SIGKILL valkey-server: a crash; what was not yet fsynced to the AOF may be lost."""
        self.valkey.kill()

    async def start_valkey(self) -> None:
        """Start valkey-server again on the same port and AOF directory (it replays the AOF)."""
        await asyncio.to_thread(self.valkey.start, 30)

    async def terminate_valkey(self) -> None:
        """SIGTERM valkey-server: it flushes and fsyncs the AOF, then exits."""
        await asyncio.to_thread(self.valkey.stop)

    def close(self) -> None:
        for name in list(self.paused):
            try:
                self.resume(name)
            except (AssertionError, ProcessLookupError):
                pass
        super().close()
