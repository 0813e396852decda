"""The service processes: started in their own sessions, output relayed, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.launcher.config import ServiceSpec
from services.launcher.output import Console

__all__ = ["Child", "Supervisor", "describe_exit"]

_LINE_LIMIT = 1024 * 1024  # longer lines are relayed in pieces
_DRAIN_SECONDS = 2.0


@dataclass
class Child:
    """A running service process and the task relaying its output."""

    spec: ServiceSpec
    process: asyncio.subprocess.Process
    relay: asyncio.Task[None] = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def drain(self, within: float = _DRAIN_SECONDS) -> None:
        """Wait until its last output lines are relayed (a grandchild may hold the pipe)."""
        done, _ = await asyncio.wait({self.relay}, timeout=within)
        if not done:
            self.relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.relay


async def _relay(console: Console, name: str, reader: asyncio.StreamReader) -> None:
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # end of output
            if exc.partial:
                console.service_line(name, _decode(exc.partial))
            return
        except asyncio.LimitOverrunError as exc:
            line = await reader.readexactly(exc.consumed)
        console.service_line(name, _decode(line))


def _decode(line: bytes) -> str:
    return line.rstrip(b"\r\n").decode("utf-8", "replace")


class Supervisor:
    """Starts the services, reports the first one to exit, and stops them all."""

    def __init__(
        self,
        console: Console,
        specs: Sequence[ServiceSpec],
        env: Mapping[str, str],
        cwd: str | None = None,
        env_of: Callable[[ServiceSpec, Mapping[str, str]], Mapping[str, str]] | None = None,
    ) -> None:
        self._console = console
        self._specs = tuple(specs)
        self._env = dict(env)
        self._cwd = cwd
        self._env_of = env_of or (lambda spec, env: {**env, **dict(spec.env)})
        self._children: list[Child] = []

    @property
    def children(self) -> tuple[Child, ...]:
        """The processes started so far."""
        return tuple(self._children)

    async def start(self) -> None:
        """Start every service (OSError if one cannot be executed)."""
        for spec in self._specs:
            process = await asyncio.create_subprocess_exec(
                *spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(self._env_of(spec, self._env)),
                cwd=self._cwd,
                # Its own session: the terminal's Ctrl-C reaches only the launcher, which
                # then stops the services in order (and Valkey last).
                start_new_session=True,
                limit=_LINE_LIMIT,
            )
            assert process.stdout is not None
            relay = asyncio.create_task(
                _relay(self._console, spec.name, process.stdout), name=f"relay-{spec.name}"
            )
            self._children.append(Child(spec, process, relay))
            self._console.info(f"started {spec.name} (pid {process.pid})")

    async def first_exit(self) -> Child:
        """The first service to exit (after its last lines were relayed)."""
        waits = {asyncio.ensure_future(child.process.wait()): child for child in self._children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        child = waits[next(iter(done))]
        await child.drain()
        return child

    async def stop(self, grace: float, force: asyncio.Event) -> None:
        """SIGTERM every live service; SIGKILL those left after ``grace`` seconds or ``force``."""
        alive = [child for child in self._children if child.alive]
        if alive:
            names = ", ".join(child.name for child in alive)
            self._console.info(f"stopping {names} (up to {grace:g}s; Ctrl-C again to kill)")
            for child in alive:
                _signal(child.process, signal.SIGTERM)
            await _wait_all(alive, grace, force)
            for child in alive:
                if child.alive:
                    why = "as asked" if force.is_set() else f"after {grace:g}s"
                    self._console.error(f"{child.name} did not stop; killing it {why}")
                    _kill_group(child.process)
            for child in alive:
                await child.process.wait()
        for child in self._children:
            await child.drain()
        for child in alive:
            code = child.process.returncode
            if code == 0:
                self._console.info(f"{child.name} stopped")
            elif code is not None:
                self._console.info(f"{child.name} stopped: it {describe_exit(code)}")


async def _wait_all(children: Sequence[Child], grace: float, force: asyncio.Event) -> None:
    """Until every child has exited, ``grace`` seconds have passed, or ``force`` is set."""
    everyone: asyncio.Future[Any] = asyncio.gather(*(child.process.wait() for child in children))
    forced: asyncio.Future[Any] = asyncio.ensure_future(force.wait())
    await asyncio.wait([everyone, forced], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    everyone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await everyone


def describe_exit(code: int) -> str:
    """``exited with code 1`` / ``was killed by SIGKILL`` for a process return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    # The service leads its own process group: take anything it started down with it.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        _signal(process, signal.SIGKILL)
