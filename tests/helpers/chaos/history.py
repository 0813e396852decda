"""The history of a chaos run, Jepsen style: every operation's invoke and its one outcome.

* ``ok``: the RPC returned OK; the operation definitely happened.
* ``fail``: a definite rejection (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, ...): it
  definitely did not happen, so anything it would have written must be absent.
* ``info``: indeterminate (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, a reset connection):
  it may or may not have happened; if it did ("recovered"), it must have happened completely.

Every send carries a unique ``client_request_id`` and a unique nonce in its text, so the
checker can tell each stored message's operation apart, and any data no operation asked for.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import grpc


class Outcome(enum.StrEnum):
    OK = "ok"
    FAIL = "fail"
    INFO = "info"


DEFINITE_FAILURES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""Codes after which the request was definitely not applied (a rejection, not an outage)."""


def classify(code: grpc.StatusCode) -> Outcome:
    """Jepsen's outcome for a final gRPC status."""
    if code == grpc.StatusCode.OK:
        return Outcome.OK
    if code in DEFINITE_FAILURES:
        return Outcome.FAIL
    return Outcome.INFO


@dataclass
class Attempt:
    """One RPC of an operation (an operation retried by client_request_id has several)."""

    started: float
    ended: float
    code: str

    @property
    def latency(self) -> float:
        return self.ended - self.started


@dataclass
class SendOp:
    """One logical SendMessage: its identity, every attempt, and its final outcome."""

    index: int
    request_id: str
    nonce: str
    sender: str
    receiver: str
    invoked_at: float
    attempts: list[Attempt] = field(default_factory=list)
    outcome: Outcome | None = None
    message_id: int | None = None

    @property
    def code(self) -> str:
        return self.attempts[-1].code if self.attempts else "-"

    @property
    def completed_at(self) -> float | None:
        return self.attempts[-1].ended if self.attempts and self.outcome else None

    @property
    def content(self) -> str:
        return content_for(self.nonce)


NONCE_PREFIX = "chaos-nonce:"


def content_for(nonce: str) -> str:
    return f"{NONCE_PREFIX}{nonce}"


def nonce_of(content: str) -> str | None:
    """The nonce a stored message's text carries, or None for text no operation wrote."""
    return content.removeprefix(NONCE_PREFIX) if content.startswith(NONCE_PREFIX) else None


@dataclass
class History:
    """Every send operation of a run, in invoke order."""

    ops: list[SendOp] = field(default_factory=list)

    def add(self, op: SendOp) -> None:
        self.ops.append(op)

    def by_outcome(self, outcome: Outcome) -> list[SendOp]:
        return [op for op in self.ops if op.outcome == outcome]

    def counts(self) -> dict[str, int]:
        return {o.value: len(self.by_outcome(o)) for o in Outcome}

    def codes(self) -> dict[str, int]:
        """How many attempts ended with each status code."""
        counts: dict[str, int] = {}
        for op in self.ops:
            for attempt in op.attempts:
                counts[attempt.code] = counts.get(attempt.code, 0) + 1
        return dict(sorted(counts.items()))

    def attempts_between(self, start: float, end: float) -> list[Attempt]:
        """Attempts that started in [start, end)."""
        return [a for op in self.ops for a in op.attempts if start <= a.started < end]

    @property
    def completed(self) -> int:
        return sum(1 for op in self.ops if op.outcome is not None)

    @property
    def last_completion(self) -> float:
        return max((op.completed_at or 0.0 for op in self.ops), default=0.0)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100, nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
