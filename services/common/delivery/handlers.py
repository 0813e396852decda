"""What a relay hands an entry to, and what the handler may raise (see :mod:`.relay`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

__all__ = [
    "BatchHandler",
    "Handler",
    "LaneKey",
    "PermanentDeliveryError",
    "TransientDeliveryError",
]


class PermanentDeliveryError(Exception):
    """Raised by a handler when retrying can never help: the entry is dead-lettered at once."""


class TransientDeliveryError(Exception):
    """Raised by a handler when the receiver is unreachable, slow or shutting down.

    Retried with backoff until it succeeds; never counts toward dead-lettering.
    """


Handler = Callable[[str, dict[str, str]], Awaitable[None]]
"""``handler(entry_id, fields)``: deliver one event; return on success, raise otherwise.

Raise :class:`TransientDeliveryError` for an outage (retried forever) and
:class:`PermanentDeliveryError` when retrying can never help (dead-lettered at once); anything
else counts toward ``max_attempts``. Must be idempotent (the relay is at-least-once): dedupe on a
business id carried in the fields (e.g. ``message_id``), not on ``entry_id``. Must bound its own
run time (e.g. a gRPC deadline) well below ``handler_timeout`` and ``claim_idle_ms``.
"""

BatchHandler = Callable[
    [list[tuple[str, dict[str, str]]]], Awaitable[list[PermanentDeliveryError | None]]
]
"""``batch_handler(entries)``: deliver several entries, in order, in one call.

The entries may be of several lanes (each lane's in stream order, one after the other), so
each must be handled on its own: one entry's refusal must not affect the others.

Returns one outcome per entry, in order: None (delivered) or a :class:`PermanentDeliveryError`
(that entry is dead-lettered, the others are not affected). Raising fails the whole batch, with
the same classification as a :data:`Handler`'s exceptions; after an unexpected error the lane
retries its entries one at a time (through ``handler``), so one bad entry is found and judged
alone. Same idempotency and run-time rules as ``handler``.
"""

LaneKey = Callable[[dict[str, str]], str]
"""``lane_key(fields)``: entries with the same key are delivered in stream order, one at a time."""


def single_lane(fields: dict[str, str]) -> str:
    """The default :data:`LaneKey`: one lane, the stream's order."""
    return ""
