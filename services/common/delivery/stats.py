"""A relay's counters, shared by the parts that read, attempt and settle entries."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["RelayStats"]


@dataclass(slots=True)
class RelayStats:
    delivered: int = 0  # handler succeeded and our XACK removed the entry
    retried: int = 0  # failed attempts scheduled for a retry (transient or not)
    dead_lettered: int = 0  # entries moved to the dead-letter stream
    reclaimed: int = 0  # entries taken over from idle consumers (XAUTOCLAIM)
    already_acked: int = 0  # handler succeeded but another relay had acked it meanwhile

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
