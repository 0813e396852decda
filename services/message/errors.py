"""Domain errors of MessageService: the shared hierarchy, re-exported (none are specific)."""

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

logger = logging.getLogger(__name__)
