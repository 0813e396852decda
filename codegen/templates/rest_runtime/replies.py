"""What generated views return: JSON replies with an explicit content type, and a bare 204."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from starlette.responses import Response

JSON_HEADERS = {"Content-Type": "application/json"}

T = TypeVar("T")


@dataclass(frozen=True)
class Reply(Generic[T]):
    """A body with the status and headers to send it with.

    Handlers return one where the contract declares response headers, or more than
    one JSON response, for the operation; elsewhere they return the body alone.
    """

    body: T
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(result: Any, status: int) -> tuple[Any, int, dict[str, str]]:
    """A JSON reply with an explicit content type.

    Connexion answers 500 when an operation declares both application/json and
    application/problem+json responses and the handler returns a bare dict.
    """
    if isinstance(result, Reply):
        return result.body, result.status or status, {**result.headers, **JSON_HEADERS}
    return result, status, dict(JSON_HEADERS)


def no_content() -> Response:
    """A bare 204; Connexion would otherwise label it application/problem+json."""
    return Response(status_code=204)
