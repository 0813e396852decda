"""Compiled validation: each schema as a jsonschema-rs validator, explained by the reference.

Every schema is compiled once, on first use, into a jsonschema-rs validator, which decides
whether a document is valid. The reference `jsonschema` validator Connexion would use is
built once alongside it and consulted only for a refused document, to find the same first
error as before: the messages, and so every problem+json body, stay those of the reference.

The OpenAPI dialect is translated for the compiled validator as Connexion extends Draft 4:
`nullable` admits null where `type` and `enum` would refuse it (request and response
bodies), `writeOnly` refuses any value in a response. `pattern` and the formats the reference
checks run the reference's own Python checks (Python's `re`, jsonschema's format checker),
so both validators accept and reject the same strings, except `email`, whose reference check
(`"@" in value`) the compiled validator runs itself as the pattern `@`; formats the reference
does not check (int32, uri-reference, password, ...) are not checked by either. Those checks
remember their answers for short strings (a bounded table): the same addresses and timestamps
come back in every page.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema_rs
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator
from jsonschema import Draft4Validator, ValidationError

logger = logging.getLogger(__name__)


PARAMETER, REQUEST, RESPONSE = "parameter", "request", "response"
"""What a schema validates: a parameter (plain Draft 4), a request or a response body."""

_REFERENCE_VALIDATORS: Mapping[str, Any] = {
    PARAMETER: Draft4Validator,
    REQUEST: Draft4RequestValidator,
    RESPONSE: Draft4ResponseValidator,
}
_PATTERN_KEYWORD = "x-missive-python-pattern"


def _native_formats() -> dict[str, str]:
    """Formats whose reference check is a regular expression the compiled validator can run
    itself, exactly (no call back into Python per string): `email`, whose check is
    `"@" in instance`, is the pattern `@`."""
    try:
        from jsonschema._format import is_email
    except ImportError:  # another jsonschema: its own checks, called back
        return {}
    checkers = Draft4Validator.FORMAT_CHECKER.checkers
    return {
        name: "@" for name in ("email", "idn-email") if checkers.get(name, (None,))[0] is is_email
    }


_NATIVE_FORMATS = _native_formats()
_VALUE_KEYWORDS = frozenset({"enum", "const", "default", "example", "examples", "x-example"})
_NEVER: dict[str, Any] = {"not": {}}
_MAX_COMPILED = 4096
_MEMO_ENTRIES = 4096
_MEMO_MAX_LENGTH = 256


def _memoised(check: Callable[[str], bool]) -> Callable[[str], bool]:
    """`check` remembering its answers for short strings: the same addresses, timestamps and
    tokens come back on every page (a bounded table, emptied when full)."""
    known: dict[str, bool] = {}

    def memoised(value: str) -> bool:
        answer = known.get(value)
        if answer is None:
            answer = check(value)
            if len(value) <= _MEMO_MAX_LENGTH:
                if len(known) >= _MEMO_ENTRIES:
                    known.clear()
                known[value] = answer
        return answer

    return memoised


@functools.cache
def _pattern_check(pattern: str) -> Callable[[str], bool]:
    """Whether a string matches `pattern` as the reference applies it (Python's `re.search`)."""
    search = re.compile(pattern).search
    return _memoised(lambda value: search(value) is not None)


class _PythonPattern:
    """The `pattern` keyword with Python's `re.search`, as the reference validator applies it."""

    def __init__(self, _parent: Any, value: str, _path: Any) -> None:
        self._matches = _pattern_check(value)

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and not self._matches(instance):
            raise ValueError("does not match the pattern the contract requires")


@functools.cache
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

    return _memoised(conforms)


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
        elif key == "format" and isinstance(value, str) and value in _NATIVE_FORMATS:
            # `pattern` itself is translated to the Python one above, so the slot is free.
            out["pattern"] = _NATIVE_FORMATS[value]
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

    __slots__ = ("_fast", "_reference", "refusals", "schema")

    def __init__(self, schema: Mapping[str, Any], kind: str) -> None:
        self.schema = schema
        self.refusals: dict[Any, str] = {}
        """What users of the validator remember of the documents it refused (see validators)."""
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
