"""The system under chaos: Valkey and the four services as separate processes, each faultable.

Extends :class:`tests.helpers.system.System` (each service started by its real entry point,
``python -m services.<svc>``, on fixed ports) with the nemesis operations: SIGKILL, SIGSTOP /
SIGCONT, SIGTERM with an exit-time measurement, and the same for the embedded valkey-server,
which is restarted on the same port and the same AOF directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
    def create(cls, base: Path, **extra_env: str) -> ChaosSystem:
        system = super().create(base, **extra_env)
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

    def terminate(self, name: str, timeout: float = 30.0) -> float:
        """SIGTERM a service and wait for it to exit; the seconds it took."""
        svc = self.services[name]
        assert svc.process is not None and svc.process.poll() is None, f"{name} is not running"
        started = time.monotonic()
        svc.process.send_signal(signal.SIGTERM)
        try:
            svc.process.wait(timeout)
        except subprocess.TimeoutExpired:
            svc.process.kill()
            svc.process.wait()
            raise AssertionError(f"{name} did not exit within {timeout:g}s of SIGTERM") from None
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

    def start_valkey(self) -> None:
        """Start valkey-server again on the same port and AOF directory (it replays the AOF)."""
        self.valkey.start(timeout=30)

    def terminate_valkey(self) -> None:
        """SIGTERM valkey-server: it flushes and fsyncs the AOF, then exits."""
        self.valkey.stop()

    def close(self) -> None:
        for name in list(self.paused):
            try:
                self.resume(name)
            except (AssertionError, ProcessLookupError):
                pass
        super().close()
