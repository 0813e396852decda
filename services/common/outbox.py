"""The transactional outbox: an event recorded in a Redis Stream atomically with its writes.

* Producers queue :func:`outbox_add` into the MULTI/EXEC of their business writes (or XADD from
  their Lua script, see :data:`OUTBOX_LUA`): the event is recorded iff the writes commit.
* :class:`services.common.delivery.Relay` delivers the stream (at least once) through a
  consumer group described by :class:`OutboxConfig`, and moves entries that can never be
  delivered to the dead-letter stream, with the ``dead_letter.*`` fields below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import redis.asyncio.client
from redis.typing import EncodableT, FieldT

__all__ = [
    "DEAD_LETTER_ATTEMPTS_FIELD",
    "DEAD_LETTER_AT_FIELD",
    "DEAD_LETTER_CONSUMER_FIELD",
    "DEAD_LETTER_ID_FIELD",
    "DEAD_LETTER_OUTCOME_FIELD",
    "DEAD_LETTER_REASON_FIELD",
    "OUTBOX_LUA",
    "OutboxConfig",
    "outbox_add",
    "outbox_lua_args",
]

# Fields added to an entry when it is copied to the dead-letter stream (next to the original ones).
DEAD_LETTER_ID_FIELD: Final = "dead_letter.id"
DEAD_LETTER_REASON_FIELD: Final = "dead_letter.reason"
DEAD_LETTER_ATTEMPTS_FIELD: Final = "dead_letter.attempts"
DEAD_LETTER_CONSUMER_FIELD: Final = "dead_letter.consumer"
DEAD_LETTER_OUTCOME_FIELD: Final = "dead_letter.outcome"  # "permanent" or "unexpected"
DEAD_LETTER_AT_FIELD: Final = "dead_letter.at"  # when, in milliseconds since the Unix epoch

OUTBOX_LUA: Final = """
-- Missive outbox: XADD an event from inside a Lua script, atomically with the script's writes.
-- stream_key must come from KEYS (e.g. KEYS[3]); argv[first] holds the number of field/value
-- strings that follow it, i.e. the list returned by delivery.outbox_lua_args(event).
local function outbox_xadd(stream_key, argv, first)
  local n = tonumber(argv[first])
  return redis.call('XADD', stream_key, '*', unpack(argv, first + 1, first + n))
end
"""
"""Lua snippet to paste at the top of a script that writes business data and an outbox event.

Example (the stream name travels in KEYS, the event in ARGV after the script's own arguments)::

    script = OUTBOX_LUA + '''
    redis.call('SET', KEYS[1], ARGV[1])
    outbox_xadd(KEYS[2], ARGV, 2)
    '''
    await r.eval(script, 2, "message:42", config.stream, payload, *outbox_lua_args(event))

Put the XADD last: neither MULTI nor Lua rolls back writes that ran before a failing command.
On Redis Cluster the stream key and the business keys must share a hash slot (hash tags).
"""


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
    max_held: int = 10_000  # entries read and not yet settled, held in memory
    handler_timeout: float = 30.0  # a handler running longer is stuck: an unexpected failure

    def __post_init__(self) -> None:
        if not self.stream or not self.group or not self.dead_letter_stream:
            raise ValueError("stream, group and dead_letter_stream must be non-empty")
        if self.dead_letter_stream == self.stream:
            raise ValueError("dead_letter_stream must differ from stream")
        names = ("max_attempts", "maxlen", "claim_idle_ms", "block_ms", "batch")
        for name in (*names, "concurrency", "max_held", "max_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        if self.handler_timeout <= 0:
            raise ValueError("handler_timeout must be > 0")


def _validated(event: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    if not event:
        raise ValueError("an outbox event needs at least one field")
    fields: dict[FieldT, EncodableT] = {}
    for key, value in event.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise TypeError("outbox event fields must be non-empty str keys with str values")
        fields[key] = value
    return fields


def outbox_add(
    pipe: redis.asyncio.client.Pipeline, config: OutboxConfig, event: Mapping[str, str]
) -> None:
    """Queue an XADD of ``event`` into a MULTI/EXEC pipeline (transactional outbox).

    The caller queues its business writes on the same ``pipe`` (created with
    ``transaction=True``; after ``WATCH``, call ``pipe.multi()`` first) and executes it: the event
    is stored iff the transaction commits. If EXEC is aborted (WATCH conflict, queue-time error,
    connection lost before EXEC) neither is written. Redis has no rollback for commands failing at
    run time (e.g. WRONGTYPE), so queue the outbox XADD last. No MAXLEN here: trimming on the
    producer side could drop entries not yet delivered; the relay trims acknowledged history.

    The event must carry its own idempotency key (e.g. ``message_id``) for the handlers; the
    stream entry id is not one (a retried EXEC writes a second entry).
    """
    if pipe.watching and not pipe.explicit_transaction:
        raise ValueError("pipeline is WATCHing in immediate mode: call pipe.multi() first")
    if not (pipe.is_transaction or pipe.explicit_transaction):
        raise ValueError("outbox_add needs a transactional pipeline (pipeline(transaction=True))")
    pipe.xadd(config.stream, _validated(event))


def outbox_lua_args(event: Mapping[str, str]) -> list[str]:
    """ARGV tail for :data:`OUTBOX_LUA`: the field count, then field, value, field, value..."""
    flat: list[str] = [str(2 * len(event))]
    for key, value in _validated(event).items():
        flat.extend((str(key), str(value)))
    return flat
