"""Processes of a bench run: CPU time from /proc, baseline servers and loader runs, cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench.loader import LOAD_DONE

ROOT = Path(__file__).resolve().parents[2]
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (every thread), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of stat(5)


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_delta(before: Mapping[str, float], pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


@contextmanager
def server_process(
    module: str, *args: str, ready_within: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A baseline server (``python -m module args``), stopped when the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_port(port: int, process: subprocess.Popen[bytes], within: float = 20.0) -> None:
    """Until something accepts on 127.0.0.1:port (RuntimeError if ``process`` exits first)."""
    deadline = time.monotonic() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port} after {within}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


class Loader:
    """One run of ``python -m tests.bench.loader`` on a spec; its results once it exits."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None
        self._file = tempfile.NamedTemporaryFile(
            "w", suffix=".json", prefix="missive-bench-", delete=False
        )

    async def start(self) -> None:
        with self._file as handle:
            json.dump(self.spec, handle)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.loader",
            self._file.name,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def load_done(self) -> None:
        """Until the loader's load phase ended (or it exited)."""
        assert self.process is not None and self.process.stdout is not None, "start() first"
        while True:
            line = await self.process.stdout.readline()
            if not line or line.decode().strip() == LOAD_DONE:
                return

    async def result(self) -> dict[str, Any]:
        assert self.process is not None, "start() first"
        try:
            out, err = await asyncio.wait_for(
                self.process.communicate(), timeout=self.spec["duration"] + 120
            )
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            os.unlink(self._file.name)
        if self.process.returncode != 0:
            raise RuntimeError(f"the loader failed:\n{err.decode(errors='replace')[-3000:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    async def close(self) -> None:
        """Kill the loader if it still runs (after an error or Ctrl-C)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def run(self) -> dict[str, Any]:
        await self.start()
        return await self.result()


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid``, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
