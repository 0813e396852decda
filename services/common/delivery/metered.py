"""A relay's counters mirrored into Prometheus (``missive_outbox_*_total{stream}``).

:class:`MeteredRelayStats` is a :class:`~.stats.RelayStats` whose ``delivered``, ``retried``
and ``dead_lettered`` also count in ``missive_outbox_delivered_total``,
``missive_outbox_retried_total`` and ``missive_outbox_dead_lettered_total`` as they grow, so
the parts that update the stats (``stats.delivered += n``) feed the metrics unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common.delivery.stats import RelayStats
from services.common.metrics.delivery import OutboxMetrics

__all__ = ["MeteredRelayStats"]


def _mirrored(name: str, count: Callable[[OutboxMetrics], Callable[[float], None]]) -> Any:
    slot: Any = RelayStats.__dict__[name]  # the slot's member descriptor

    def get(self: MeteredRelayStats) -> int:
        value: int = slot.__get__(self, RelayStats)
        return value

    def set_(self: MeteredRelayStats, value: int) -> None:
        try:
            before = slot.__get__(self, RelayStats)
        except AttributeError:  # set for the first time, by __init__
            before = 0
        if value > before:
            count(self._outbox)(value - before)
        slot.__set__(self, value)

    return property(get, set_)


class MeteredRelayStats(RelayStats):
    """The counters of the relay of ``stream``, also counted in Prometheus."""

    __slots__ = ("_outbox",)

    def __init__(self, stream: str) -> None:
        self._outbox = OutboxMetrics(stream)
        super().__init__()

    delivered = _mirrored("delivered", lambda m: m.delivered)
    retried = _mirrored("retried", lambda m: m.retried)
    dead_lettered = _mirrored("dead_lettered", lambda m: m.dead_lettered)
