"""FrontendService's domain errors: the shared family, as it needs no errors of its own."""

from __future__ import annotations

from services.common.domain import (
    DomainError,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "DomainError",
    "InvalidArgument",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
]
