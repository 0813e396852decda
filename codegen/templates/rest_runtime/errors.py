"""Connexion error handlers: every exception answered as a typed problem+json."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException

from .problems import problem_response, problem_type

logger = logging.getLogger(__name__)


async def _bad_encoding(_request: ConnexionRequest, _exc: Exception) -> ConnexionResponse:
    # A JSON body that is not valid UTF-8 otherwise surfaces as a 500.
    detail = "The request body is not valid UTF-8 JSON."
    return problem_response(400, "Bad Request", detail, ext={"pointer": ""})


async def _problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    assert isinstance(exc, ProblemException)
    if not exc.type or exc.type == "about:blank":
        exc.type = problem_type(int(exc.status))
    return exc.to_problem()


async def _http_problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    """Starlette's HTTP errors (e.g. 404 for a path no operation has), typed like the rest."""
    assert isinstance(exc, HTTPException)
    title = _STATUS_TITLES.get(exc.status_code, "Error")
    return problem_response(exc.status_code, title, str(exc.detail), headers=exc.headers)


async def _internal_problem(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    logger.error("unhandled error: %r", exc, exc_info=exc)
    detail = "The request could not be completed."
    return problem_response(500, "Internal Server Error", detail)


_STATUS_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def documented_methods(spec: Path) -> list[tuple[re.Pattern[str], str]]:
    """(path regex, "GET, POST") for each path of the OpenAPI document, literal paths first."""
    document = yaml.safe_load(spec.read_text(encoding="utf-8"))
    table = []
    for template, item in document.get("paths", {}).items():
        methods = ", ".join(m.upper() for m in HTTP_METHODS if m in item)
        regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        table.append((template.count("{"), re.compile(f"^{regex}$"), methods))
    return [(regex, methods) for _, regex, methods in sorted(table, key=lambda row: row[0])]


def _method_not_allowed(
    spec: Path,
) -> Callable[[ConnexionRequest, Exception], Awaitable[ConnexionResponse]]:
    """A 405 whose Allow header lists every method the document gives the path (Starlette's
    lists only those of the first route matching the path, one route per operation)."""
    table = documented_methods(spec)

    async def handler(request: ConnexionRequest, _exc: Exception) -> ConnexionResponse:
        path = request.url.path
        allowed = next((methods for regex, methods in table if regex.match(path)), "")
        detail = f"{request.method} is not supported here; allowed: {allowed}."
        return problem_response(405, "Method Not Allowed", detail, headers={"Allow": allowed})

    return handler


def add_error_handlers(app: AsyncApp, spec: Path) -> None:
    """Answer every error of `app` (its OpenAPI document at `spec`) as a typed problem."""
    app.add_error_handler(UnicodeDecodeError, _bad_encoding)
    app.add_error_handler(ProblemException, _problem)
    app.add_error_handler(HTTPException, _http_problem)
    app.add_error_handler(Exception, _internal_problem)
    app.add_error_handler(405, _method_not_allowed(spec))
