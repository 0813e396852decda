"""The SDK's one exception family, and its translation from gRPC statuses and problem+json.

Every failure a Missive call can produce is a :class:`MissiveError`::

    MissiveError
    ├── ConfigError          an argument or MISSIVE_* variable is malformed (also a ValueError)
    ├── InvalidArgument      400, 413 / INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION
    ├── Unauthenticated      401 / UNAUTHENTICATED; also a failed login or no signed-in user
    ├── PermissionDenied     403 / PERMISSION_DENIED
    ├── NotFound             404 / NOT_FOUND
    ├── AlreadyExists        409 / ALREADY_EXISTS, ABORTED
    ├── RateLimited          429 / RESOURCE_EXHAUSTED; ``retry_after`` seconds when the server said
    ├── Unavailable          502, 503 / UNAVAILABLE; a service that cannot be reached at all
    ├── DeadlineExceeded     504 / DEADLINE_EXCEEDED; the client's timeout elapsed
    └── ServerError          500 and anything unexpected / INTERNAL, UNKNOWN, UNIMPLEMENTED, ...

The tables below are the only place wire errors become exceptions: the gRPC and REST adapters
extract (status, message, retry-after) and call :func:`from_grpc` or :func:`from_http`, which
keep the server's message and are raised ``from`` the original transport error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

__all__ = [
    "AlreadyExists",
    "ConfigError",
    "DeadlineExceeded",
    "InvalidArgument",
    "MissiveError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "from_grpc",
    "from_http",
    "parse_retry_after",
]


class MissiveError(Exception):
    """Base class of every error the SDK raises.

    Attributes:
        message: the server's explanation (problem+json ``detail``, gRPC status details) or the
            SDK's own when no server answered.
        code: the canonical gRPC status name of the failure (``"NOT_FOUND"``, ...), whichever
            transport carried it.
        http_status: the HTTP status when the error came from a REST response, else ``None``.
        service: which service failed (``"user"``, ``"message"``, ``"notification"``,
            ``"frontend"``), when a call to one did.
    """

    code: str = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        service: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.http_status = http_status
        self.service = service

    def __str__(self) -> str:
        return self.message


class ConfigError(MissiveError, ValueError):
    """A client argument or ``MISSIVE_*`` variable is malformed; the message names it."""

    code = "INVALID_ARGUMENT"


class InvalidArgument(MissiveError):
    """The request was rejected as malformed; the message names the offending field."""

    code = "INVALID_ARGUMENT"


class Unauthenticated(MissiveError):
    """No valid access token: not signed in, token expired or revoked, or wrong credentials."""

    code = "UNAUTHENTICATED"


class PermissionDenied(MissiveError):
    """The token is valid but may not do this (another user's data, an internal method)."""

    code = "PERMISSION_DENIED"


class NotFound(MissiveError):
    """The user, message, conversation or notification does not exist (for the caller)."""

    code = "NOT_FOUND"


class AlreadyExists(MissiveError):
    """The resource exists already (email registered, client request id reused differently)."""

    code = "ALREADY_EXISTS"


class RateLimited(MissiveError):
    """Too many requests or open streams; wait ``retry_after`` seconds (when known) and retry."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        service: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, code=code, http_status=http_status, service=service)
        self.retry_after = retry_after


class Unavailable(MissiveError):
    """A service or its store cannot be reached right now; the call may be retried."""

    code = "UNAVAILABLE"


class DeadlineExceeded(MissiveError):
    """The call did not complete within its timeout; its outcome is unknown."""

    code = "DEADLINE_EXCEEDED"


class ServerError(MissiveError):
    """The server failed unexpectedly or answered outside its contract."""

    code = "INTERNAL"


_BY_GRPC_CODE: Mapping[str, type[MissiveError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "FAILED_PRECONDITION": InvalidArgument,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "ABORTED": AlreadyExists,
    "RESOURCE_EXHAUSTED": RateLimited,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
}

_BY_HTTP_STATUS: Mapping[int, type[MissiveError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: AlreadyExists,
    413: InvalidArgument,
    422: InvalidArgument,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: DeadlineExceeded,
}

_HTTP_TO_CODE: Mapping[int, str] = {
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
}


def _build(
    cls: type[MissiveError],
    message: str,
    *,
    code: str,
    http_status: int | None,
    service: str | None,
    retry_after: float | None,
) -> MissiveError:
    if issubclass(cls, RateLimited):
        return cls(
            message, code=code, http_status=http_status, service=service, retry_after=retry_after
        )
    return cls(message, code=code, http_status=http_status, service=service)


def from_grpc(
    code: str, message: str, *, retry_after: float | None = None, service: str | None = None
) -> MissiveError:
    """The exception for a gRPC status (by name, e.g. ``"NOT_FOUND"``) and its details."""
    cls = _BY_GRPC_CODE.get(code, ServerError)
    text = message or f"the server answered {code}"
    return _build(cls, text, code=code, http_status=None, service=service, retry_after=retry_after)


def from_http(
    status: int, body: bytes, headers: Mapping[str, str], *, service: str | None = None
) -> MissiveError:
    """The exception for a non-2xx REST response; the problem+json ``detail`` is the message."""
    cls = _BY_HTTP_STATUS.get(status, ServerError)
    message = _problem_message(body) or f"the server answered HTTP {status}"
    retry_after = parse_retry_after(headers.get("retry-after"))
    code = _HTTP_TO_CODE.get(status, cls.code)
    return _build(
        cls, message, code=code, http_status=status, service=service, retry_after=retry_after
    )


def _problem_message(body: bytes) -> str:
    """``detail`` (or ``title``) of an RFC 9457 document; empty when the body is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(document, dict):
        return ""
    for key in ("detail", "title"):
        value = document.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def parse_retry_after(value: str | bytes | None) -> float | None:
    """Seconds from a ``Retry-After`` header or ``retry-after`` trailer (delta-seconds only)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds
