"""Domain errors and the caller identity, shared by every service and free of transport imports.

    DomainError
    ├── InvalidArgument    bad input                      → INVALID_ARGUMENT / 400 validation
    ├── Unauthenticated    no or bad credentials          → UNAUTHENTICATED / 401 unauthenticated
    ├── PermissionDenied   not allowed for this caller    → PERMISSION_DENIED / 403 forbidden
    ├── NotFound           no such resource               → NOT_FOUND / 404 not-found
    ├── AlreadyExists      key taken / key reused         → ALREADY_EXISTS / 409 already-exists
    ├── RateLimited        throttled, retry after N s     → RESOURCE_EXHAUSTED / 429 rate-limited
    ├── FailedPrecondition not in a state that allows it  → FAILED_PRECONDITION / 409
    │                                                        failed-precondition
    └── Unavailable        a dependency is down           → UNAVAILABLE / 503 unavailable

Each edge (gRPC interceptor, REST error handler) translates them once; on REST the last word is
the problem type, `https://missive.dev/problems/<kind>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal


class DomainError(Exception):
    """A failure the caller can act on; the message is safe to show them."""

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    problem_kind: ClassVar[str] = "internal"
    """The last segment of the REST problem `type` URI."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code, http_status, title = "INVALID_ARGUMENT", 400, "Bad Request"
    problem_kind = "validation"


class Unauthenticated(DomainError):
    code, http_status, title = "UNAUTHENTICATED", 401, "Unauthorized"
    problem_kind = "unauthenticated"


class PermissionDenied(DomainError):
    code, http_status, title = "PERMISSION_DENIED", 403, "Forbidden"
    problem_kind = "forbidden"


class NotFound(DomainError):
    code, http_status, title = "NOT_FOUND", 404, "Not Found"
    problem_kind = "not-found"


class AlreadyExists(DomainError):
    code, http_status, title = "ALREADY_EXISTS", 409, "Conflict"
    problem_kind = "already-exists"


class RateLimited(DomainError):
    code, http_status, title = "RESOURCE_EXHAUSTED", 429, "Too Many Requests"
    problem_kind = "rate-limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class FailedPrecondition(DomainError):
    code, http_status, title = "FAILED_PRECONDITION", 409, "Conflict"
    problem_kind = "failed-precondition"


class Unavailable(DomainError):
    code, http_status, title = "UNAVAILABLE", 503, "Service Unavailable"
    problem_kind = "unavailable"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (by email) or one of the services (by name).

    A user principal also carries what its access token says about the account - the account
    id (never reused, so a later account under the same email is a different account), the
    token version (raised to revoke every earlier token) and when the token stops being
    accepted (``expires_at``, epoch seconds, leeway included). They do not take part in
    equality: two principals are the same caller when kind and name match.
    """

    kind: Literal["user", "service"]
    name: str
    account_id: str = field(default="", compare=False)
    token_version: int = field(default=0, compare=False)
    expires_at: float = field(default=0.0, compare=False)

    @property
    def is_service(self) -> bool:
        return self.kind == "service"

    def require_self(self, email: str) -> None:
        """Users act only on their own data; services were already checked by the allowlist."""
        if self.kind == "user" and self.name != email:
            raise PermissionDenied("you may only act on your own data")
