"""What generated views return: JSON replies with an explicit content type, and a bare 204."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from starlette.responses import Response

from .json_codec import dumps_reply

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


def json_reply(result: Any, status: int) -> Response:
    """A JSON reply with an explicit content type, serialised here.

    The response Connexion would build from (body, status, headers), byte for byte, built
    once: Connexion passes a ready response on as it is (response validation still reads it).
    An explicit content type matters: Connexion answers 500 when an operation declares both
    application/json and application/problem+json responses and a handler returns a bare dict.
    """
    if isinstance(result, Reply):
        body, status, headers = (
            result.body,
            result.status or status,
            {
                **result.headers,
                **JSON_HEADERS,
            },
        )
    else:
        body, headers = result, JSON_HEADERS
    return Response(None if body is None else dumps_reply(body), status, headers)


def no_content() -> Response:
    """A bare 204; Connexion would otherwise label it application/problem+json."""
    return Response(status_code=204)
