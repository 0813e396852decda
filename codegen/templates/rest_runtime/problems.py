"""Problem documents (RFC 9457): every error the REST edge answers, typed by a stable URI.

Every error is an RFC 9457 problem whose `type` names its kind with a stable URI, documented
in each OpenAPI document. Validation problems also carry the failing field: `pointer`, a JSON
pointer into the request body (RFC 6901, "" for the body as a whole), or `parameter`, the
name of a query or path parameter. Neither ever carries the submitted value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from connexion.exceptions import BadRequestProblem
from connexion.lifecycle import ConnexionResponse
from connexion.problem import problem
from starlette.types import Send

PROBLEM_TYPE_BASE = "https://missive.dev/problems/"
PROBLEM_TYPES: Mapping[int, str] = {
    400: "validation",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "already-exists",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
}
"""The kind of error each status code means, by default (a domain error may name its own)."""


def problem_type(status: int, kind: str | None = None) -> str:
    """The `type` URI of a problem: `kind` (e.g. "already-exists"), else the status's kind."""
    slug = kind or PROBLEM_TYPES.get(status)
    return PROBLEM_TYPE_BASE + slug if slug else "about:blank"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str | None = None,
    headers: Mapping[str, str] | None = None,
    ext: Mapping[str, Any] | None = None,
) -> ConnexionResponse:
    """An application/problem+json response whose `type` names the kind of error."""
    return problem(
        status,
        title,
        detail,
        type=problem_type(status, kind),
        headers=dict(headers) if headers else None,
        ext=dict(ext) if ext else None,
    )


def problem_document(
    status: int, title: str, detail: str, *, kind: str | None = None
) -> dict[str, Any]:
    """The body of a problem, for code answering below Connexion (ASGI, the HTTP protocol)."""
    return {"type": problem_type(status, kind), "title": title, "status": status, "detail": detail}


class ValidationProblem(BadRequestProblem):  # type: ignore[misc]
    """A 400 for input the contract refuses, naming the failing field (never its value)."""

    def __init__(
        self, detail: str, *, pointer: str | None = None, parameter: str | None = None
    ) -> None:
        super().__init__(detail=detail)
        self.type = problem_type(400)
        ext: dict[str, str] = {}
        if pointer is not None:
            ext["pointer"] = pointer
        if parameter is not None:
            ext["parameter"] = parameter
        self.ext = ext or None


def json_pointer(path: Sequence[object]) -> str:
    """The RFC 6901 JSON pointer of a location in a document ("" for the whole document)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


async def send_problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with an application/problem+json document, straight from ASGI middleware."""
    body = json.dumps(problem_document(status, title, detail))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body.encode())).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})
