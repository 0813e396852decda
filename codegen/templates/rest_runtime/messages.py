"""Validation messages that name the field and the rule it broke, never the submitted value.

jsonschema's messages quote the rejected value ("'Sh0rt!7' is too short"), which would put
passwords, tokens and whole 4 KiB texts into replies and logs. Every validation message
instead names the field and the rule it broke, and never contains the submitted value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from jsonschema import ValidationError

from .problems import json_pointer

_NAME_CHARS = 40
NAMES_SHOWN = 5
"""How many client-chosen names a message lists before "and N more"."""


def short_name(name: object) -> str:
    """A client-chosen name (an unknown property or parameter), quoted and cut short."""
    text = str(name)
    if len(text) > _NAME_CHARS:
        text = text[:_NAME_CHARS] + "…"
    return repr(text)


def _names(names: Sequence[object]) -> str:
    shown = ", ".join(short_name(name) for name in list(names)[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


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
