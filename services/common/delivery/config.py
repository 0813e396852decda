"""A relay's configuration: its stream, consumer group, dead-letter stream and tuning."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

__all__ = ["OutboxConfig", "consumer_name"]


@dataclass(frozen=True)
class OutboxConfig:
    """One outbox stream, its relay consumer group, its dead-letter stream and relay tuning."""

    stream: str  # e.g. "outbox:notifications"
    group: str  # e.g. "notification-relay"
    dead_letter_stream: str  # e.g. "outbox:notifications:dead"
    # Failed attempts with an *unexpected* error (a handler bug, an undocumented status) before
    # the entry is dead-lettered. Transient failures (outages, deadlines) never count.
    max_attempts: int = 8
    maxlen: int = 100_000  # above this length, acknowledged history is trimmed (approximately)
    claim_idle_ms: int = 15_000  # XAUTOCLAIM entries idle longer than this (crashed consumer)
    block_ms: int = 1_000  # XREADGROUP BLOCK; must stay below the client's socket_timeout
    batch: int = 256  # entries per XREADGROUP / XAUTOCLAIM
    backoff_initial: float = 0.1
    backoff_max: float = 1.0  # cap of the retry delay (jitter then picks in [cap/2, cap])
    max_batch: int = 100  # entries of one lane per batch_handler call (the RPCs' limit)
    concurrency: int = 64  # handler calls in flight at once (each for a different lane)
    # Batch calls shared by several lanes in flight at once: while they run, new entries wait
    # in the stream and the heads of the lanes that become ready gather for the next one
    # (bigger calls under load, none delayed by a timer).
    shared_calls: int = 1
    # A shared call running longer than this (seconds) has stalled: it no longer counts toward
    # shared_calls, so a hung receiver holds back the others this long at most...
    stall_after: float = 0.1
    # ... up to this many shared calls in flight, stalled ones included.
    max_shared_calls: int = 4
    # Under load - when, at the rate entries arrive, the next shared call would carry at least
    # gather_after of them anyway - it waits gather_seconds after the previous one ends (unless
    # a whole call's worth is held or waiting already): what arrives meanwhile goes in one
    # larger call, which costs less CPU per entry on both sides. Lighter traffic never waits.
    gather_after: int = 8
    gather_seconds: float = 0.008
    max_held: int = 10_000  # entries read and not yet settled, held in memory
    handler_timeout: float = 30.0  # a handler running longer is stuck: an unexpected failure

    def __post_init__(self) -> None:
        if not self.stream or not self.group or not self.dead_letter_stream:
            raise ValueError("stream, group and dead_letter_stream must be non-empty")
        if self.dead_letter_stream == self.stream:
            raise ValueError("dead_letter_stream must differ from stream")
        names = ("max_attempts", "maxlen", "claim_idle_ms", "block_ms", "batch")
        counts = ("concurrency", "max_held", "max_batch", "shared_calls", "gather_after")
        for name in (*names, *counts):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if self.handler_timeout <= 0:
            raise ValueError("handler_timeout must be > 0")
        if self.gather_seconds < 0:
            raise ValueError("gather_seconds must be >= 0")
        if self.stall_after <= 0:
            raise ValueError("stall_after must be > 0")
        if self.max_shared_calls < self.shared_calls:
            raise ValueError("max_shared_calls must be >= shared_calls")


def consumer_name() -> str:
    """This process's name in a relay's consumer group: hostname-pid.

    A restarted process is a new consumer: what a crashed one had read but not acknowledged is
    taken over by XAUTOCLAIM once idle for the outbox's ``claim_idle_ms``.
    """
    return f"{socket.gethostname()}-{os.getpid()}"
