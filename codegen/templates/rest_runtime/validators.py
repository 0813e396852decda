"""Connexion's validators on the compiled schemas, with messages free of submitted values.

The parameter validator reads the request's query once (into the lists Connexion's URI parser
takes, without building Starlette's QueryParams) and leaves it for the view's arguments; it
remembers the messages of the parameter values it refused (a bounded table per validator), so
a client repeating a bad request is answered without the reference validator running again.
For an operation whose parameters are all one-value query parameters it resolves and checks
the query itself, as Connexion's request and URI parser would (same values, same problems);
anything else takes Connexion's path.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import (
    BadRequestProblem,
    NonConformingResponseBody,
    TypeValidationError,
)
from connexion.lifecycle import ConnexionRequest
from connexion.utils import coerce_type, is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    JSONRequestBodyValidator,
    JSONResponseBodyValidator,
    ParameterValidator,
    TextResponseBodyValidator,
)
from starlette.types import Scope

from .compiled import PARAMETER, REQUEST, RESPONSE, compiled_validator
from .json_codec import loads_json
from .messages import NAMES_SHOWN, short_name, validation_message, validation_pointer
from .problems import ValidationProblem

logger = logging.getLogger(__name__)

QUERY_PARAMS_KEY = "missive.query_params"
"""Where the parameter validator leaves the request's parsed query in the ASGI scope."""


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


_REFUSALS_KEPT = 1024
"""Refused parameter values each validator keeps the message of (then emptied): a client
repeating a bad request is answered without running the reference validator again."""
_REFUSAL_MAX_LENGTH = 256


def _rememberable(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= _REFUSAL_MAX_LENGTH
    return isinstance(value, (int, float, bool))


def query_pairs(query: str) -> list[tuple[str, str]]:
    """`parse_qsl(query, keep_blank_values=True)`: without a `%` or a `+` to decode, the
    same pairs split directly."""
    if "%" in query or "+" in query:
        return parse_qsl(query, True)
    return [
        (name, value) if sep else (pair, "")
        for pair in query.split("&")
        if pair
        for name, sep, value in (pair.partition("="),)
    ]


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
        validator = compiled_validator(param.get("schema", param), PARAMETER)
        rememberable = _rememberable(value)
        refusals = validator.refusals
        key = (name, type(value), value)
        refused = refusals.get(key) if rememberable else None
        if refused is None:
            error = validator.first_error(value)
            if error is None:
                return None
            refused = validation_message(error, root=name)
            if rememberable:
                if len(refusals) >= _REFUSALS_KEPT:
                    refusals.clear()
                refusals[key] = refused
        raise ValidationProblem(refused, parameter=name)

    def validate(self, scope: Scope) -> None:
        # The query as Starlette's QueryParams and Connexion's request would give it (each
        # name's values in order, names in order of first appearance), without building one.
        lists: dict[str, list[str]] = {}
        for name, value in query_pairs(scope["query_string"].decode("latin-1")):
            lists.setdefault(name, []).append(value)
        scalars = self._scalar_query
        if (
            scalars is None
            or any("[" in name for name in lists)
            or (self.strict_validation and not lists.keys() <= self._allowed_query)
        ):
            request = ConnexionRequest(scope, uri_parser=self.uri_parser)
            request._query_params = self.uri_parser.resolve_query(lists)
            self.validate_request(request)
            resolved = request.query_params
        else:
            # What resolve_query and validate_request do for such an operation, directly.
            resolved = self._resolved_scalars(lists)
            for param in scalars:
                self.validate_parameter("query", resolved.get(param["name"]), param)
        # The query as parsed here, for the view's arguments (`stack`): parsed once.
        scope[QUERY_PARAMS_KEY] = resolved

    @functools.cached_property
    def _scalar_query(self) -> list[dict[str, Any]] | None:
        """The operation's query parameters if they are all its parameters and each takes one
        value (no array, no object, no deepObject style), else None. A query naming no other
        parameter, and none in the deepObject way (`a[b]`), is then resolved and checked
        without Connexion's request and URI parser, to the same values and problems."""
        if any(self.parameters.get(where) for where in ("path", "header", "cookie")):
            return None
        query = list(self.parameters.get("query", []))
        for param in query:
            schema = param.get("schema", param)
            if schema.get("type") in ("array", "object") or param.get("style") == "deepObject":
                return None
        return query

    @functools.cached_property
    def _allowed_query(self) -> set[str]:
        allowed: set[str] = {p["name"] for p in self.parameters.get("query", [])}
        allowed.update(self.security_query_params)
        return allowed

    def _resolved_scalars(self, lists: dict[str, list[str]]) -> dict[str, Any]:
        """resolve_query of `lists` for an operation with :attr:`_scalar_query`: a declared
        parameter's last value, coerced to its type when it can be; any other as it came."""
        defns = self.uri_parser.param_defns
        resolved: dict[str, Any] = {}
        for name, values in lists.items():
            defn = defns.get(name)
            if defn is None:
                resolved[name] = values
                continue
            try:
                resolved[name] = coerce_type(defn, values[-1], "parameter", name)
            except TypeValidationError:
                resolved[name] = values[-1]
        return resolved

    def validate_query_parameter_list(self, request: Any, security_params: Any = None) -> set[str]:
        extra = super().validate_query_parameter_list(request, security_params)
        return {short_name(name) for name in sorted(extra)[:NAMES_SHOWN]}


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


def validator_map() -> dict[str, Any]:
    body = MediaTypeDict({**VALIDATOR_MAP["body"], "*/*json": SafeJSONRequestBodyValidator})
    response = MediaTypeDict(
        {
            **VALIDATOR_MAP["response"],
            "*/*json": SafeJSONResponseBodyValidator,
            "text/plain": SafeTextResponseBodyValidator,
        }
    )
    return {"parameter": SafeParameterValidator, "body": body, "response": response}
