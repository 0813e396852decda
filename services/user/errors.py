"""UserService's domain errors: the shared hierarchy, re-exported (no service-specific ones)."""

from __future__ import annotations

import logging

from services.common.domain import (
    AlreadyExists,
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

logger = logging.getLogger(__name__)

__all__ = [
    "AlreadyExists",
    "DomainError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "Unauthenticated",
    "Unavailable",
]
