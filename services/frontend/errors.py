"""FrontendService's own domain error; the shared family lives in services.common.domain."""

from __future__ import annotations

from typing import ClassVar

from services.common.domain import DomainError

__all__ = ["StreamReplaced"]


class StreamReplaced(DomainError):
    """A stream ended to make room for a newer one of the same account (ABORTED): clients
    should not reconnect automatically, or two of them would keep replacing each other."""

    code: ClassVar[str] = "ABORTED"
    http_status: ClassVar[int] = 409
    title: ClassVar[str] = "Conflict"
