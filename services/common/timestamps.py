"""The one text form of a moment every service stores and serves: ISO 8601 in UTC with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(moment: datetime, *, milliseconds: bool = False) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix: microseconds only when non-zero, or always exactly
    milliseconds with ``milliseconds=True`` (UserService keeps its times to the millisecond)."""
    utc = moment.astimezone(UTC)
    text = utc.isoformat(timespec="milliseconds") if milliseconds else utc.isoformat()
    return text.replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """The aware UTC datetime of an ISO 8601 string; ValueError if it has no offset."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return moment.astimezone(UTC)
