"""One chaos scenario end to end: start the system, load it, fault it, drain it, check it.

A scenario test drives a :class:`ChaosRun`::

    await run.setup(users=6)                  # processes, users, live streams (warmed up)
    load = run.workload.start(200, rate=25)   # recorded operations
    await run.workload.reached(60)
    run.system.kill("notification")           # the nemesis
    ...
    run.heal()                                # every fault is over
    await load
    result = await run.check()                # drain, then lost / duplicated / unexpected
    run.finish(result)                        # records it for the summary; fails on violations
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from tests.helpers.chaos.checker import Check, check
from tests.helpers.chaos.cluster import ChaosSystem
from tests.helpers.chaos.history import History, Outcome, SendOp
from tests.helpers.chaos.report import RESULTS, ScenarioResult
from tests.helpers.chaos.store import Snapshot, StoreReader
from tests.helpers.chaos.streams import LiveStream, open_streams
from tests.helpers.chaos.workload import Workload, make_users
from tests.helpers.clients import User

DEEP_ENV = "MISSIVE_CHAOS"
"""``MISSIVE_CHAOS=deep`` (what ``make chaos`` sets) runs every scenario at full scale."""

NOTIFICATION_SLA_SECONDS = 10.0
KEEPALIVE_COMPLAINTS = ("too_many_pings", "ENHANCE_YOUR_CALM")
P99_ENV = "MISSIVE_CHAOS_P99_MS"
"""The SendMessage p99 budget (ms) of R1/R12 (default 250); raise it on a loaded host."""


def deep() -> bool:
    return os.environ.get(DEEP_ENV, "").strip().lower() == "deep"


def p99_budget_ms() -> float:
    return float(os.environ.get(P99_ENV, "") or 250)


class ChaosRun:
    """The system, the users, the workload, the live streams and the checker of one scenario."""

    def __init__(self, name: str, system: ChaosSystem) -> None:
        self.name = name
        self.system = system
        self.history = History()
        self.users: list[User] = []
        self.streams: list[LiveStream] = []
        self.reader = StoreReader(system.valkey.url)
        self.healed_at = 0.0
        self.extra_violations: list[str] = []  # found by a scenario's own probes
        self.snapshot = Snapshot()  # the checker's final snapshot
        self._workload: Workload | None = None

    @property
    def workload(self) -> Workload:
        assert self._workload is not None, "call setup() first"
        return self._workload

    async def setup(
        self,
        *,
        users: int,
        streams: bool = True,
        retry_for: float = 0.0,
        deadline: float = 2.0,
    ) -> None:
        """Start Valkey and the services, register users, open one live stream per user.

        Each stream is confirmed live by a first message to its user, which the stream must
        yield within the notification SLA (those messages are part of the history).
        """
        self.system.start()
        await self.system.wait_healthy(within=60)
        self.users = await make_users(self.system, users)
        self._workload = Workload(
            self.system, self.users, self.history, retry_for=retry_for, deadline=deadline
        )
        if not streams:
            return
        self.streams = open_streams(self.system, self.users)
        await asyncio.sleep(0.5)  # let the streams register before the first messages
        for index, stream in enumerate(self.streams):
            sender = self.users[(index + 1) % len(self.users)]
            op = await self.workload.send(sender, stream.user)
            assert op.outcome == Outcome.OK and op.message_id is not None, op
            assert await stream.wait_message(op.message_id, NOTIFICATION_SLA_SECONDS), (
                f"the stream of {stream.email} did not show its first message"
            )

    def heal(self) -> None:
        """Mark the end of the last fault (time to drain counts from here or the last reply)."""
        self.healed_at = time.monotonic()

    async def drain(
        self, *, outbox_within: float, deliver_within: float
    ) -> tuple[float | None, Snapshot]:
        """Wait until every stream group is drained, then until everything arrived.

        Returns the moment everything had arrived (None if it never did) and the last snapshot.
        """
        deadline = time.monotonic() + outbox_within
        while True:
            snap = await self.reader.snapshot()
            if snap.drained or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        deadline = time.monotonic() + deliver_within
        while True:
            if snap.drained and check(self.history, snap, self.streams).converged:
                return time.monotonic(), snap
            if time.monotonic() > deadline:
                return None, snap
            await asyncio.sleep(0.3)
            snap = await self.reader.snapshot()

    async def check(
        self,
        *,
        outbox_within: float = 60.0,
        deliver_within: float = NOTIFICATION_SLA_SECONDS,
        quiet: float = 1.0,
        dead_letters: int = 0,
        allow_lost: Callable[[SendOp], bool] | None = None,
    ) -> ScenarioResult:
        """Drain, stay quiet for ``quiet`` s (late duplicates show up), then check everything.

        The standard criteria: drained; lost, duplicated, unexpected all 0 for messages, stored
        notifications and every stream; no partial write; structural invariants hold; exactly
        ``dead_letters`` dead letters.
        """
        outstanding = [op for op in self.history.ops if op.outcome is None]
        assert not outstanding, f"{len(outstanding)} operations still running"
        start = max(self.healed_at, self.history.last_completion)
        converged_at, snap = await self.drain(
            outbox_within=outbox_within, deliver_within=deliver_within
        )
        await asyncio.sleep(quiet)
        snap = await self.reader.snapshot()
        found: Check = check(self.history, snap, self.streams, allow_lost=allow_lost)
        counts = self.history.counts()
        result = ScenarioResult(
            name=self.name,
            ops=len(self.history.ops),
            ok=counts["ok"],
            fail=counts["fail"],
            info=counts["info"],
            check=found,
            streams=len(self.streams),
            connections=sum(len(s.connections) for s in self.streams),
            dead_letters=len(snap.dead_letters),
            drain_s=None if converged_at is None else max(0.0, converged_at - start),
            codes=self.history.codes(),
        )
        result.require(snap.drained, f"drained (stream groups: {self._groups(snap)})")
        result.require(converged_at is not None, "everything delivered after draining")
        for label, figures in (
            ("messages", found.messages),
            ("stored notifications", found.notifications),
            ("live streams", found.streams),
        ):
            result.require(figures.clean, f"{label}: lost = duplicated = unexpected = 0")
        result.require(not found.incomplete, "no partial writes")
        result.require(not found.invariants, "structural invariants")
        result.require(
            len(snap.dead_letters) == dead_letters,
            f"{dead_letters} dead letter(s), found {len(snap.dead_letters)}"
            + "".join(f"\n      {d.describe()}" for d in snap.dead_letters[:5]),
        )
        pings = self._log_mentions(KEEPALIVE_COMPLAINTS)
        if any(pings.values()):
            result.figures["keepalive complaints in service logs"] = str(pings)
        result.require(
            not any(pings.values()),
            "no GOAWAY too_many_pings / ENHANCE_YOUR_CALM between clients and servers",
        )
        self.snapshot = snap
        return result

    def catch_up(self, fault_at: float, result: ScenarioResult) -> str:
        """The backlog acknowledged during the fault and how fast it drained after the heal
        (a rate only when no send was still running after the heal)."""
        backlog = sum(
            1
            for op in self.history.by_outcome(Outcome.OK)
            if fault_at <= (op.completed_at or 0.0) <= self.healed_at
        )
        if result.drain_s is None:
            return f"{backlog} sent during the fault, never all delivered"
        text = f"{backlog} sent during the fault, all delivered {result.drain_s:.2f} s after"
        if self.history.last_completion <= self.healed_at and result.drain_s > 0:
            text += f" the heal ({backlog / result.drain_s:.0f}/s)"
        else:
            text += " the last send"
        return text

    def _log_mentions(self, needles: tuple[str, ...]) -> dict[str, int]:
        """How many lines of each service's log mention any of ``needles``."""
        counts: dict[str, int] = {}
        for name, svc in self.system.services.items():
            text = svc.log_path.read_text(errors="replace") if svc.log_path.exists() else ""
            counts[name] = sum(
                1 for line in text.splitlines() if any(needle in line for needle in needles)
            )
        return counts

    @staticmethod
    def _groups(snap: Snapshot) -> str:
        return (
            ", ".join(
                f"{g.stream}/{g.group} pending {g.pending} lag {g.lag}"
                for g in snap.groups
                if not g.drained
            )
            or "all drained"
        )

    def finish(self, result: ScenarioResult) -> None:
        """Record ``result`` for the summary and fail the test if a criterion was violated."""
        RESULTS.append(result)
        print(result.describe())
        assert result.passed, result.describe()

    async def close(self) -> None:
        for stream in self.streams:
            await stream.close()
        if self._workload is not None:
            await self._workload.close()
