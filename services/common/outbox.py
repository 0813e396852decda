"""The transactional outbox: an event recorded in a Redis Stream atomically with its writes.

A producer XADDs the event from the Lua script that makes its business writes (see
:data:`OUTBOX_LUA` and :func:`outbox_lua_args`): the event is recorded iff the writes are.
The relay of :mod:`services.common.delivery` then delivers the stream at least once, and moves
entries that can never be delivered to the dead-letter stream. The event carries its own
idempotency key (e.g. ``message_id``) for the handlers: the stream entry id is not one.

When tracing is on, :func:`outbox_lua_args` also stores the W3C trace context of the write
(fields ``traceparent`` and ``tracestate``) inside the event, so each delivery of the event
continues the trace of the request that recorded it (see :mod:`services.common.tracing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.common.tracing import inject_event

__all__ = ["OUTBOX_LUA", "outbox_lua_args"]

OUTBOX_LUA: Final = """
-- Missive outbox: XADD an event from inside a Lua script, atomically with the script's writes.
-- stream_key must come from KEYS (e.g. KEYS[3]); argv[first] holds the number of field/value
-- strings that follow it, i.e. the list returned by outbox.outbox_lua_args(event).
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


def _validated(event: Mapping[str, str]) -> dict[str, str]:
    if not event:
        raise ValueError("an outbox event needs at least one field")
    fields: dict[str, str] = {}
    for key, value in event.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise TypeError("outbox event fields must be non-empty str keys with str values")
        fields[key] = value
    return fields


def outbox_lua_args(event: Mapping[str, str]) -> list[str]:
    """ARGV tail for :data:`OUTBOX_LUA`: the field count, then field, value, field, value...

    With tracing on and a span current, the event's fields include its trace context.
    """
    fields = inject_event(_validated(event))
    flat: list[str] = [str(2 * len(fields))]
    for key, value in fields.items():
        flat.extend((str(key), str(value)))
    return flat
