"""Stream entries as a relay holds them, read from redis-py's replies (RESP2 or RESP3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "pair", "stream_entries", "text"]


def text(value: Any) -> str:
    """``value`` as str (redis-py returns bytes unless the client decodes responses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(slots=True)
class Entry:
    """One stream entry read by the relay and not yet settled."""

    id: str
    raw: dict[Any, Any]  # as returned by redis-py (bytes or str); empty if the entry was deleted

    def fields(self) -> dict[str, str]:
        return {text(k): text(v) for k, v in self.raw.items()}


def stream_entries(response: Any) -> list[Entry]:
    """Entries of the single stream in an XREADGROUP reply (RESP2/RESP3, legacy or not)."""
    if not response:
        return []
    items: Any = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    first = items[0] if items else None
    if isinstance(first, list) and (not first or isinstance(first[0], tuple | list)):
        items = first  # RESP3 legacy shape: {stream: [[entry, ...]]}
    return [pair(entry) for entry in items]


def pair(entry: Any) -> Entry:
    """One ``(id, fields)`` item of a stream reply; fields may come as a flat list."""
    entry_id, fields = entry
    if isinstance(fields, list):
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return Entry(text(entry_id), dict(fields or {}))
