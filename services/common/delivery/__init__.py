"""The relay: delivers an outbox stream (see :mod:`services.common.outbox`) at least once.

A :class:`Relay` reads the stream through a consumer group in batches (XREADGROUP COUNT), hands
each entry to ``handler`` and XACKs what is settled in one command per round. Unacknowledged
entries stay pending: a restarted relay re-reads its own first, and entries of a crashed relay
are reclaimed (XAUTOCLAIM) by another once idle for ``claim_idle_ms``.

Outcomes of one attempt (the handler's return or exception):

* success: the entry is acknowledged;
* :class:`TransientDeliveryError` (the receiver is down, slow, shutting down, overloaded): the
  attempt is retried with capped exponential backoff and jitter, *indefinitely*, and never counts
  toward dead-lettering: an outage of any length delays delivery and loses nothing. Relay restarts
  and reclaims never count either (Redis' delivery counter is not used);
* :class:`PermanentDeliveryError` (a malformed event, a documented refusal such as
  INVALID_ARGUMENT): the entry is dead-lettered at once;
* any other exception, or a handler still running after ``handler_timeout`` (a bug, an
  undocumented status): retried with backoff, and dead-lettered after ``max_attempts`` such
  failures, so a bug hit by one event cannot block its lane forever. Dead letters keep the
  original fields plus ``dead_letter.*`` ones, and can be replayed once the bug is fixed.

Ordering and concurrency: entries are grouped in *lanes* by ``lane_key(fields)`` (e.g. the
receiver's email). Each lane is delivered strictly in stream order, one attempt at a time; a
failing or slow head holds back only its own lane. Up to ``concurrency`` lanes are delivered at
once, and at most ``max_held`` entries are read ahead in memory. When attempts of several lanes
fail transiently with no success in between (the receiver is down), all lanes pause together
(the same capped backoff) and one attempt at a time probes the receiver until one succeeds.
With a batch handler, the heads of the ready lanes share one call (``config.max_batch`` entries,
several of a lane in its order), ``config.shared_calls`` (one) at once; while it runs, new
entries wait in the stream, so the next read and call take all that arrived (calls grow with the
load). Under load - when, at the rate entries arrive, the next call would carry
``config.gather_after`` (8) or more anyway - it also waits ``config.gather_seconds`` (8 ms)
after the previous one ends, gathering what arrives meanwhile. A call running longer than
``config.stall_after`` (0.1 s) no longer holds back the next one, nor does any call while a
backlog waits (the last read filled its COUNT, or a whole call's worth is held), up to
``config.max_shared_calls`` (4) in flight, so a hung call holds back the other lanes that long
at most. A lane whose shared call failed goes on alone
until its head is settled.
The order guarantee is per relay: several relays on one stream each keep their own lanes in
order, and entries reclaimed from a crashed relay may follow newer ones of the same lane.

An entry may reach a handler more than once: handlers MUST be idempotent (dedupe on a business
id carried in the event, never on the stream entry id). Log lines written while an entry is
attempted carry its stream entry id as their request id. With tracing on, each attempt is a
span continuing the trace stored in the event (see :mod:`services.common.tracing`).

The parts, one concern each: :mod:`.config` (the stream, group and tuning), :mod:`.handlers`
(what a handler is and may raise), :mod:`.reader` (reading and claiming), :mod:`.lanes`
(per-receiver lanes), :mod:`.attempts` (one attempt and its outcome), :mod:`.policy` (backoff
and the outage gate), :mod:`.gathering` (when a shared call waits to gather),
:mod:`.settlement` (XACK), :mod:`.dead_lettering` (the dead-letter entry), :mod:`.trim`
(dropping acknowledged history) and :mod:`.relay` (the loop).
"""

from services.common.delivery.config import OutboxConfig, consumer_name
from services.common.delivery.dead_lettering import (
    DEAD_LETTER_AT_FIELD,
    DEAD_LETTER_ATTEMPTS_FIELD,
    DEAD_LETTER_CONSUMER_FIELD,
    DEAD_LETTER_ID_FIELD,
    DEAD_LETTER_OUTCOME_FIELD,
    DEAD_LETTER_REASON_FIELD,
)
from services.common.delivery.handlers import (
    BatchHandler,
    Handler,
    LaneKey,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.common.delivery.relay import Relay

__all__ = [
    "DEAD_LETTER_ATTEMPTS_FIELD",
    "DEAD_LETTER_AT_FIELD",
    "DEAD_LETTER_CONSUMER_FIELD",
    "DEAD_LETTER_ID_FIELD",
    "DEAD_LETTER_OUTCOME_FIELD",
    "DEAD_LETTER_REASON_FIELD",
    "BatchHandler",
    "Handler",
    "LaneKey",
    "OutboxConfig",
    "PermanentDeliveryError",
    "Relay",
    "TransientDeliveryError",
    "consumer_name",
]
