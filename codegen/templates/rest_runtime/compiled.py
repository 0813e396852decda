"""Compiled validation: each schema as a jsonschema-rs validator, explained by the reference.

Every schema is compiled once, on first use, into a jsonschema-rs validator, which decides
whether a document is valid. The reference `jsonschema` validator Connexion would use is
built once alongside it and consulted only for a refused document, to find the same first
error as before: the messages, and so every problem+json body, stay those of the reference.

The OpenAPI dialect is translated for the compiled validator as Connexion extends Draft 4:
`nullable` admits null where `type` and `enum` would refuse it (request and response
bodies), `writeOnly` refuses any value in a response. A `pattern` written in the subset of
Python's `re` that :func:`native_pattern` translates exactly (literals, classes, `\\s`,
groups, alternation, quantifiers, `^` and `$` at the ends: the contracts' patterns) runs in
the compiled validator as the ECMA-262 expression matching the same strings; any other
pattern, and the formats the reference checks, run the reference's own Python checks
(Python's `re`, jsonschema's format checker), so both validators accept and reject the same
strings. `email`, whose reference check is `"@" in value`, runs in the compiled validator as
the pattern `@`; formats the reference does not check (int32, uri-reference, password, ...)
are not checked by either. The Python checks remember their answers for short strings (a
bounded table): the same addresses and timestamps come back in every page.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
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


# The escapes both dialects read as the one character they name.
_LITERAL_ESCAPES = {
    **{c: c for c in "\\.^$*+?()[]{}|/-"},
    **{"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"},
}
_HEX = frozenset("0123456789abcdefABCDEF")
_BOUNDS = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")
_SPACE = object()
r"""`\s` in a pattern: Python's class of whitespace."""
_RANGE = object()
"""A `-` between two characters of a class."""


@functools.cache
def _python_spaces() -> str:
    r"""What Python's `\s` matches in a str pattern (the characters `str.isspace` accepts), as
    ECMA-262 writes them in a class."""
    return "".join(map(_ecma, filter(str.isspace, map(chr, range(sys.maxunicode + 1)))))


def _ecma(char: str) -> str:
    r"""`char` as ECMA-262 writes it anywhere, in a class or out: letters and digits as they
    are, any other character of the Basic Multilingual Plane as a `\u` escape."""
    if char.isascii() and char.isalnum():
        return char
    return f"\\u{ord(char):04x}"


def _escape(pattern: str, at: int) -> tuple[object, int] | None:
    """The escape at `pattern[at]` (a backslash): the character it names (or _SPACE) and
    where the pattern goes on; None for one outside the translated subset."""
    code = pattern[at + 1 : at + 2]
    if code == "s":
        return _SPACE, at + 2
    if code in _LITERAL_ESCAPES:
        return _LITERAL_ESCAPES[code], at + 2
    width = {"x": 2, "u": 4}.get(code, 0)
    digits = pattern[at + 2 : at + 2 + width]
    if width and len(digits) == width and set(digits) <= _HEX:
        return chr(int(digits, 16)), at + 2 + width
    return None


def _class(pattern: str, at: int) -> tuple[str, int] | None:
    """The class opening at `pattern[at]` (`[`) in ECMA-262 and where the pattern goes on;
    None for one outside the translated subset."""
    at += 1
    negated = pattern.startswith("^", at)
    at += negated
    items: list[object] = []
    while True:
        if at >= len(pattern):
            return None
        char = pattern[at]
        if char == "]" and items:
            break
        if char == "\\":
            escaped = _escape(pattern, at)
            if escaped is None:
                return None
            item, at = escaped
        elif char == "[" or ord(char) > 0xFFFF:  # `[`: Python warns of sets to come
            return None
        else:
            ranges = char == "-" and bool(items) and pattern[at + 1 : at + 2] != "]"
            item, at = (_RANGE if ranges else char), at + 1
        items.append(item)
    for index, item in enumerate(items):
        if item is _RANGE:
            low, high = items[index - 1], items[index + 1]
            chained = index >= 2 and items[index - 2] is _RANGE
            if chained or not isinstance(low, str) or not isinstance(high, str):
                return None  # `[a-b-c]`, `[\s-a]`: what a range means differs
    body = "".join(
        _python_spaces() if i is _SPACE else "-" if i is _RANGE else _ecma(str(i)) for i in items
    )
    return ("[^" if negated else "[") + body + "]", at + 1


@functools.cache
def native_pattern(pattern: str) -> str | None:
    r"""The ECMA-262 expression the compiled validator finds in exactly the strings in which
    Python's `re.search(pattern, ...)` finds a match, or None if `pattern` uses more than this
    translates: literals and their escapes, classes of characters, ranges and `\s`, `\s`,
    `.`, `(...)` and `(?:...)`, `|`, the quantifiers `*`, `+`, `?`, `{m}`, `{m,}`, `{m,n}` and
    their lazy forms, `^` as the first character and `$` as the last. Where the dialects
    differ it spells out Python's meaning: `\s` is Python's whitespace, `.` any character but
    a newline, and a final `$` also matches before a last newline."""
    out: list[str] = []
    at, last = 0, "start"
    while at < len(pattern):
        token = _token(pattern, at, last)
        if token is None:
            return None
        text, at, last = token
        out.append(text)
    return "".join(out)


def _token(pattern: str, at: int, last: str) -> tuple[str, int, str] | None:
    """The token at `pattern[at]` in ECMA-262, where the pattern goes on and what the token
    is (start, open: a group or an alternative, atom, quantifier or lazy), given what the
    previous one was; None if it is outside the translated subset."""
    char = pattern[at]
    if ord(char) > 0xFFFF:
        return None
    if char == "\\":
        escaped = _escape(pattern, at)
        if escaped is None:
            return None
        name, at = escaped
        return (f"[{_python_spaces()}]" if name is _SPACE else _ecma(str(name))), at, "atom"
    if char == "[":
        translated = _class(pattern, at)
        return None if translated is None else (*translated, "atom")
    if char in "*+?{":
        return _quantifier(pattern, at, last)
    return _syntax(pattern, at)


def _quantifier(pattern: str, at: int, last: str) -> tuple[str, int, str] | None:
    """The quantifier at `pattern[at]`, as :func:`_token`."""
    char = pattern[at]
    bounds = _BOUNDS.match(pattern, at) if char == "{" else None
    if last == "atom" and (char != "{" or bounds):
        kind = "quantifier"
    elif last == "quantifier" and char == "?":
        kind = "lazy"
    else:  # possessive, repeated, a `{` Python reads as itself, or nothing to repeat
        return None
    text = bounds.group() if bounds else char
    return text, at + len(text), kind


def _syntax(pattern: str, at: int) -> tuple[str, int, str] | None:
    """The anchor, group, alternative, `.` or literal at `pattern[at]`, as :func:`_token`."""
    char = pattern[at]
    if char == "^" and at == 0:
        return "^", 1, "start"
    if char == "$" and at == len(pattern) - 1:
        return "\\n?$", at + 1, "atom"
    if pattern.startswith("(?:", at):
        return "(?:", at + 3, "open"
    if char == "(" and not pattern.startswith("(?", at):
        return "(", at + 1, "open"
    if char in _SYNTAX:
        text, kind = _SYNTAX[char]
        return text, at + 1, kind
    if char in "^$()]}":  # anchors elsewhere, other groups, a stray bracket
        return None
    return _ecma(char), at + 1, "atom"


_SYNTAX = {"|": ("|", "open"), ")": (")", "atom"), ".": ("[^\\n]", "atom")}


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
    patterns: list[str] = []  # run by the compiled validator itself
    for key, value in schema.items():
        if key in _VALUE_KEYWORDS:
            out[key] = value
        elif key == "pattern" and isinstance(value, str):
            native = native_pattern(value)
            if native is None:
                out[_PATTERN_KEYWORD] = value
            else:
                patterns.append(native)
        elif key == "format" and isinstance(value, str) and value in _NATIVE_FORMATS:
            patterns.append(_NATIVE_FORMATS[value])
        else:
            if key == "format" and isinstance(value, str) and formats is not None:
                formats.add(value)
            out[key] = compiled_schema(value, kind, formats)
    _add_patterns(out, patterns)
    nullable = schema.get("nullable") is True or schema.get("x-nullable") is True
    return _admit_null(out) if kind != PARAMETER and nullable else out


def _add_patterns(schema: dict[str, Any], patterns: list[str]) -> None:
    """The patterns the compiled validator runs itself, added to a translated `schema`: the
    first in `pattern`, any other in an `allOf` of its own."""
    if patterns:
        schema["pattern"] = patterns[0]
    if len(patterns) > 1:
        schema["allOf"] = [*schema.get("allOf", []), *({"pattern": p} for p in patterns[1:])]


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
