"""Runtime shared by every generated REST package: Connexion wiring and its workarounds."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Generic, TypeVar

import jsonschema_rs
import orjson
import yaml
from connexion import AsyncApp
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem, NonConformingResponseBody, ProblemException
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator
from connexion.jsonifier import Jsonifier
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.problem import problem
from connexion.resolver import Resolver
from connexion.security import BearerSecurityHandler
from connexion.utils import inspect_function_arguments, is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    JSONRequestBodyValidator,
    JSONResponseBodyValidator,
    ParameterValidator,
    TextResponseBodyValidator,
)
from jsonschema import Draft4Validator, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TokenInfo = dict[str, Any]
"""Claims of a verified bearer token, as returned by the app's token verifier."""

TokenVerifier = Callable[[str], Awaitable[TokenInfo | None]]
"""Checks a bearer token; returns its claims, or None when the token is not valid."""

Lifespan = Callable[[Any], Any]

JSON_HEADERS = {"Content-Type": "application/json"}
DEFAULT_MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects a JSON body may have (the contracts need 3)."""

logger = logging.getLogger(__name__)

# --- Problem types ---------------------------------------------------------------------------
#
# Every error is an RFC 9457 problem whose `type` names its kind with a stable URI, documented
# in each OpenAPI document. Validation problems also carry the failing field: `pointer`, a JSON
# pointer into the request body (RFC 6901, "" for the body as a whole), or `parameter`, the
# name of a query or path parameter. Neither ever carries the submitted value.

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


@functools.lru_cache(maxsize=64)
def _accepts_kwarg(func: Callable[..., Any], keyword: str) -> bool:
    """Whether `func` takes `keyword`: Connexion asks on every request, inspecting anew."""
    arguments, has_kwargs = inspect_function_arguments(func)
    return bool(has_kwargs or keyword in arguments)


def _bearer_handler(verify: TokenVerifier) -> type[BearerSecurityHandler]:
    class _Handler(BearerSecurityHandler):  # type: ignore[misc]
        _accepts_kwarg = staticmethod(_accepts_kwarg)

        def _resolve_func(self, security_scheme: Any) -> TokenVerifier:
            return verify

    return _Handler


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


# --- Validation messages ------------------------------------------------------------------
#
# jsonschema's messages quote the rejected value ("'Sh0rt!7' is too short"), which would put
# passwords, tokens and whole 4 KiB texts into replies and logs. Every validation message
# instead names the field and the rule it broke, and never contains the submitted value.

_NAME_CHARS = 40
_NAMES_SHOWN = 5


def _short(name: object) -> str:
    """A client-chosen name (an unknown property or parameter), quoted and cut short."""
    text = str(name)
    if len(text) > _NAME_CHARS:
        text = text[:_NAME_CHARS] + "…"
    return repr(text)


def _names(names: Sequence[object]) -> str:
    shown = ", ".join(_short(name) for name in list(names)[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _rule(error: ValidationError) -> str:
    """What the value of the field failed, in words, without the value itself."""
    value: Any = error.validator_value
    rules: dict[str, Callable[[], str]] = {
        "minLength": lambda: f"shorter than {value} characters",
        "maxLength": lambda: f"longer than {value} characters",
        "pattern": lambda: "does not match the pattern the contract requires",
        "format": lambda: f"is not a valid {value}",
        "minimum": lambda: f"below the minimum {value}",
        "maximum": lambda: f"above the maximum {value}",
        "exclusiveMinimum": lambda: "at or below the minimum",
        "exclusiveMaximum": lambda: "at or above the maximum",
        "minItems": lambda: f"fewer than {value} items",
        "maxItems": lambda: f"more than {value} items",
        "uniqueItems": lambda: "has duplicate items",
        "minProperties": lambda: f"fewer than {value} properties",
        "maxProperties": lambda: f"more than {value} properties",
        "enum": lambda: "not one of: " + ", ".join(json.dumps(v) for v in value),
        "const": lambda: f"must be {json.dumps(value)}",
    }
    if error.validator == "type":
        kinds = value if isinstance(value, list) else [value]
        if error.instance is None:
            return "must not be null"
        return "must be " + " or ".join(_TYPE_NAMES.get(str(k), str(k)) for k in kinds)
    if error.validator in rules:
        return rules[str(error.validator)]()
    return f"does not satisfy the contract's {error.validator!s} rule"


def validation_pointer(error: ValidationError) -> str:
    """The JSON pointer of the failing member: the missing property for `required`."""
    path: list[object] = list(error.absolute_path)
    instance: Any = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        if missing:
            path.append(missing[0])
    return json_pointer(path)


def validation_message(error: ValidationError, root: str = "body") -> str:
    """`field: rule` for a jsonschema error, e.g. "password: shorter than 8 characters"."""
    path = [str(part) for part in error.absolute_path]
    field = ".".join(path) if path else root
    instance: Any = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        prefix = f"{field}." if path else ""
        return f"{prefix}{missing[0] if missing else '?'}: required"
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        extra = sorted(str(name) for name in instance if name not in known)
        return f"{field}: properties not in the contract: {_names(extra)}"
    return f"{field}: {_rule(error)}"


# --- Compiled validation --------------------------------------------------------------------
#
# Every schema is compiled once, on first use, into a jsonschema-rs validator, which decides
# whether a document is valid. The reference `jsonschema` validator Connexion would use is
# built once alongside it and consulted only for a refused document, to find the same first
# error as before: the messages, and so every problem+json body, stay those of the reference.
#
# The OpenAPI dialect is translated for the compiled validator as Connexion extends Draft 4:
# `nullable` admits null where `type` and `enum` would refuse it (request and response
# bodies), `writeOnly` refuses any value in a response. `pattern` and the formats the reference
# checks run the reference's own Python checks (Python's `re`, jsonschema's format checker),
# so both validators accept and reject the same strings; formats the reference does not check
# (int32, uri-reference, password, ...) are not checked by either.

PARAMETER, REQUEST, RESPONSE = "parameter", "request", "response"
"""What a schema validates: a parameter (plain Draft 4), a request or a response body."""

_REFERENCE_VALIDATORS: Mapping[str, Any] = {
    PARAMETER: Draft4Validator,
    REQUEST: Draft4RequestValidator,
    RESPONSE: Draft4ResponseValidator,
}
_PATTERN_KEYWORD = "x-missive-python-pattern"
_VALUE_KEYWORDS = frozenset({"enum", "const", "default", "example", "examples", "x-example"})
_NEVER: dict[str, Any] = {"not": {}}
_MAX_COMPILED = 4096


class _PythonPattern:
    """The `pattern` keyword with Python's `re.search`, as the reference validator applies it."""

    def __init__(self, _parent: Any, value: str, _path: Any) -> None:
        self._search = re.compile(value).search

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and not self._search(instance):
            raise ValueError("does not match the pattern the contract requires")


def _format_check(name: str) -> Callable[[str], bool]:
    """The reference's check of format `name` (what `FormatChecker.conforms` runs)."""
    if name not in Draft4Validator.FORMAT_CHECKER.checkers:
        return lambda _value: True
    func, raises = Draft4Validator.FORMAT_CHECKER.checkers[name]

    def conforms(value: str) -> bool:
        try:
            return bool(func(value))
        except raises:
            return False

    return conforms


def compiled_schema(schema: Any, kind: str, formats: set[str] | None = None) -> Any:
    """`schema` (OpenAPI 3.0) as the JSON Schema Draft 4 the compiled validator runs.

    Collects the names of the formats it uses into `formats`.
    """
    if isinstance(schema, list):
        return [compiled_schema(item, kind, formats) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if kind == RESPONSE and (schema.get("writeOnly") is True or schema.get("x-writeOnly") is True):
        return dict(_NEVER)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _VALUE_KEYWORDS:
            out[key] = value
        elif key == "pattern" and isinstance(value, str):
            out[_PATTERN_KEYWORD] = value
        else:
            if key == "format" and isinstance(value, str) and formats is not None:
                formats.add(value)
            out[key] = compiled_schema(value, kind, formats)
    nullable = schema.get("nullable") is True or schema.get("x-nullable") is True
    return _admit_null(out) if kind != PARAMETER and nullable else out


def _admit_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A translated `nullable` schema: null passes its `type` and `enum`, as Connexion's does."""
    kinds = schema.get("type")
    if isinstance(kinds, str):
        schema["type"] = [kinds, "null"]
    if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]
    return schema


class CompiledValidator:
    """One schema's compiled validator, with the reference one to explain what it refuses."""

    __slots__ = ("_fast", "_reference", "schema")

    def __init__(self, schema: Mapping[str, Any], kind: str) -> None:
        self.schema = schema
        self._reference = _REFERENCE_VALIDATORS[kind](
            schema, format_checker=Draft4Validator.FORMAT_CHECKER
        )
        formats: set[str] = set()
        translated = compiled_schema(schema, kind, formats)
        self._fast = jsonschema_rs.Draft4Validator(
            translated,
            formats={name: _format_check(name) for name in formats},
            validate_formats=True,
            keywords={_PATTERN_KEYWORD: _PythonPattern},
        )

    def is_valid(self, instance: Any) -> bool:
        """Whether the compiled validator accepts `instance`.

        A document it cannot take (a string with a lone surrogate, which is not UTF-8) is
        left to the reference validator.
        """
        try:
            return bool(self._fast.is_valid(instance))
        except ValueError:
            return self.reference_error(instance) is None

    def reference_error(self, instance: Any) -> ValidationError | None:
        """The reference validator's first error on `instance`, None if it accepts it."""
        return next(iter(self._reference.iter_errors(instance)), None)

    def first_error(self, instance: Any) -> ValidationError | None:
        """None for a valid `instance`, else the error the reference validator reports first."""
        if self.is_valid(instance):
            return None
        error = self.reference_error(instance)
        if error is None:
            # Only for what JSON cannot write (Infinity, NaN, which the json module reads); the
            # equivalence tests keep it so. The reference decides.
            logger.debug("compiled validator refused a document the reference accepts")
        return error

    def validate(self, instance: Any) -> None:
        """Raise the reference validator's first error on an invalid `instance`."""
        error = self.first_error(instance)
        if error is not None:
            raise error


_compiled: dict[tuple[int, str], CompiledValidator] = {}


def compiled_validator(schema: Mapping[str, Any], kind: str) -> CompiledValidator:
    """The compiled validator of `schema`, compiled on its first use and kept.

    Connexion hands the validators the same schema objects on every request, so they are
    cached by identity (each entry holds its schema, so the identity cannot be reused).
    """
    key = (id(schema), kind)
    cached = _compiled.get(key)
    if cached is not None and cached.schema is schema:
        return cached
    validator = CompiledValidator(schema, kind)
    if len(_compiled) < _MAX_COMPILED:
        _compiled[key] = validator
    return validator


def loads_json(text: str | bytes) -> Any:
    """Parse JSON as the json module does, with orjson for speed.

    orjson is stricter (no NaN, no lone surrogates, 64-bit integers): what it refuses is
    parsed by the json module, whose error messages the problem+json bodies keep.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _json_default(value: Any) -> Any:
    """Connexion's JSON encoding of the types JSON lacks (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime.datetime):
        return value.isoformat("T") + ("" if value.tzinfo else "Z")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class FastJSON:
    """The json module's `dumps` and `loads` for Connexion's Jsonifier, with orjson.

    Replies are compact UTF-8 JSON; what orjson cannot encode (integers beyond 64 bits,
    non-string keys) is encoded by the json module as before.
    """

    @staticmethod
    def dumps(data: Any, **kwargs: Any) -> str:
        try:
            return orjson.dumps(data, default=_json_default, option=_ORJSON_OPTIONS).decode()
        except TypeError:
            return json.dumps(data, **kwargs)

    @staticmethod
    def loads(data: str | bytes) -> Any:
        return loads_json(data)


class SafeJSONRequestBodyValidator(JSONRequestBodyValidator):  # type: ignore[misc]
    """Connexion's JSON body validator with messages that never quote the submitted value."""

    async def _parse(self, stream: AsyncIterator[bytes], scope: Scope) -> Any:
        body = b"".join([chunk async for chunk in stream]).decode(self._encoding)
        if not body:
            return None
        try:
            return loads_json(body)
        except json.JSONDecodeError as error:
            raise BadRequestProblem(detail=str(error)) from None

    def _validate(self, body: Any) -> dict[str, Any] | None:
        if not self._nullable and body is None:
            raise ValidationProblem("body: required", pointer="")
        error = compiled_validator(self._schema, REQUEST).first_error(body)
        if error is not None:
            message = validation_message(error)
            logger.info("request body rejected: %s", message)
            raise ValidationProblem(message, pointer=validation_pointer(error))
        return None


class SafeParameterValidator(ParameterValidator):  # type: ignore[misc]
    """Connexion's parameter validator with messages that never quote the submitted value.

    A refused parameter is a ValidationProblem naming it in `parameter`.
    """

    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict[str, Any], param_name: str | None = None
    ) -> str | None:
        name = str(param["name"])
        if is_nullable(param) and is_null(value):
            return None
        if value is None:
            if param.get("required"):
                raise ValidationProblem(
                    f"{name}: required {parameter_type} parameter", parameter=name
                )
            return None
        error = compiled_validator(param.get("schema", param), PARAMETER).first_error(value)
        if error is not None:
            raise ValidationProblem(validation_message(error, root=name), parameter=name)
        return None

    def validate_query_parameter_list(self, request: Any, security_params: Any = None) -> set[str]:
        extra = super().validate_query_parameter_list(request, security_params)
        return {_short(name) for name in sorted(extra)[:_NAMES_SHOWN]}


class SafeJSONResponseBodyValidator(JSONResponseBodyValidator):  # type: ignore[misc]
    """Logs a non-conforming response by field and rule: it may hold a fresh access token."""

    def _parse(self, stream: Iterator[bytes]) -> Any:
        body = b"".join(stream).decode(self._encoding)
        if not body:
            return None
        try:
            return loads_json(body)
        except json.JSONDecodeError as error:
            raise NonConformingResponseBody(str(error)) from None

    def _validate(self, body: Any) -> None:
        error = compiled_validator(self._schema, RESPONSE).first_error(body)
        if error is not None:
            message = validation_message(error)
            logger.warning("response body does not conform to the contract: %s", message)
            raise NonConformingResponseBody(
                detail=f"Response body does not conform to the contract. {message}"
            )


class SafeTextResponseBodyValidator(TextResponseBodyValidator):  # type: ignore[misc]
    _validate = SafeJSONResponseBodyValidator._validate


def _validator_map() -> dict[str, Any]:
    body = MediaTypeDict({**VALIDATOR_MAP["body"], "*/*json": SafeJSONRequestBodyValidator})
    response = MediaTypeDict(
        {
            **VALIDATOR_MAP["response"],
            "*/*json": SafeJSONResponseBodyValidator,
            "text/plain": SafeTextResponseBodyValidator,
        }
    )
    return {"parameter": SafeParameterValidator, "body": body, "response": response}


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class PathControlCharacters:
    """ASGI middleware answering 400 problem+json for a path with control characters.

    No path parameter of a contract may hold one, and the router cannot match a decoded
    newline at all, so such a request would otherwise end as a 404 no contract documents.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _CONTROL_CHARACTERS.search(scope.get("path", "")):
            detail = "The request path contains control characters."
            await send_problem(send, 400, "Bad Request", detail)
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """ASGI middleware reading the whole request body, bounded, before the app sees it.

    A body above `max_bytes` is a 413 problem+json, whether it announced its size
    (Content-Length) or not (chunked); a chunked body within the limit reaches the app with
    its Content-Length set, as Connexion reads a body without one as missing. A JSON body
    nested deeper than MAX_JSON_DEPTH is a 400 before anything parses it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        length = next((value for name, value in headers if name == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._reject(send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = next((value for name, value in headers if name == b"content-type"), b"")
        if b"json" in content_type.lower() and json_depth(body) > MAX_JSON_DEPTH:
            detail = f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels."
            await send_problem(send, 400, "Bad Request", detail)
            return
        if length is None and body:
            scope = dict(scope)
            scope["headers"] = [
                *(item for item in headers if item[0] != b"transfer-encoding"),
                (b"content-length", str(len(body)).encode()),
            ]
        replayed: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    async def _reject(self, send: Send) -> None:
        detail = f"The request body exceeds {self.max_bytes} bytes."
        await send_problem(send, 413, "Payload Too Large", detail)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel giving `messages` first, then whatever `receive` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


# A string (its closing quote optional, so the scan stays linear on hostile text) or a bracket.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets in strings skipped).

    Only a bound: on text that is not JSON it may overcount, and the parser rejects it anyway.
    """
    depth = deepest = 0
    for token in _JSON_TOKEN.findall(body):
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth = max(depth - 1, 0)
    return deepest


class SingleAuthorization:
    """ASGI middleware answering 401 problem+json for a request with several Authorization
    headers: which one counts would otherwise depend on the layer reading them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            count = sum(1 for name, _ in scope.get("headers", []) if name == b"authorization")
            if count > 1:
                detail = "The request carries more than one Authorization header; send one."
                challenge = [(b"www-authenticate", b"Bearer")]
                await send_problem(send, 401, "Unauthorized", detail, challenge)
                return
        await self.app(scope, receive, send)


def build_app(
    *,
    import_name: str,
    spec: Path,
    operations: Mapping[str, Callable[..., Awaitable[Any]]],
    verify_token: TokenVerifier,
    lifespan: Lifespan | None = None,
    validate_responses: bool = True,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    middlewares: Sequence[Any] = (),
) -> AsyncApp:
    """Build a Connexion AsyncApp routing each operationId to `operations[operationId]`.

    Request and response validation are on, Swagger UI is served at /ui/, the
    OpenAPI document at /openapi.json, and every error is application/problem+json.
    """
    app = AsyncApp(import_name, lifespan=lifespan, jsonifier=Jsonifier(FastJSON))
    app.add_api(
        spec,
        resolver=Resolver(function_resolver=lambda operation_id: operations[operation_id]),
        strict_validation=True,
        validate_responses=validate_responses,
        pythonic_params=False,
        swagger_ui_options=SwaggerUIOptions(swagger_ui=True),
        security_map={"bearer": _bearer_handler(verify_token)},
        validator_map=_validator_map(),
    )
    app.add_error_handler(UnicodeDecodeError, _bad_encoding)
    app.add_error_handler(ProblemException, _problem)
    app.add_error_handler(HTTPException, _http_problem)
    app.add_error_handler(Exception, _internal_problem)
    app.add_error_handler(405, _method_not_allowed(spec))
    # Outermost, so an oversized body is refused before anything reads it.
    app.add_middleware(
        BodySizeLimit,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        max_bytes=max_body_bytes,
    )
    app.add_middleware(PathControlCharacters, position=MiddlewarePosition.BEFORE_EXCEPTION)
    app.add_middleware(SingleAuthorization, position=MiddlewarePosition.BEFORE_EXCEPTION)
    for middleware in middlewares:
        app.add_middleware(middleware)
    return app
