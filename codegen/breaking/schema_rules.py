"""How one schema of an OpenAPI document compares with its next version: type, format,
nullability, and the ways a request schema can come to accept less."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = Callable[[str], object]
"""Records one breaking change of the schema being compared."""

_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum")
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum")
_WIDER_FORMATS = {("int32", "int64"), ("float", "double")}


def type_changed(o: dict[str, Any], n: dict[str, Any], direction: str, add: Report) -> bool:
    """Report type, format and nullability changes; True if the type itself changed (then
    nothing else of the schema is compared)."""
    if "type" in o and "type" in n and o["type"] != n["type"]:
        add(f"type changed: {o['type']} -> {n['type']}")
        return True
    if "type" not in o and "type" in n and direction == "request":
        add(f"type restricted to {n['type']}")
    _format_changed(o.get("format"), n.get("format"), direction, add)
    if o.get("nullable") and not n.get("nullable") and direction == "request":
        add("null no longer accepted")
    if n.get("nullable") and not o.get("nullable") and direction == "response":
        add("may now be null")
    return False


def _format_changed(old: Any, new: Any, direction: str, add: Report) -> None:
    if old == new:
        return
    if direction == "request":
        if new is not None and (old, new) not in _WIDER_FORMATS:
            add(f"format changed: {old or '(none)'} -> {new}")
    elif old is not None and (new, old) not in _WIDER_FORMATS:
        add(f"format changed: {old} -> {new or '(none)'}")


def narrowed(o: dict[str, Any], n: dict[str, Any], add: Report) -> None:
    """Report every way a request schema `n` accepts less than `o`."""
    _bounds_narrowed(o, n, add)
    _values_narrowed(o, n, add)


def _bounds_narrowed(o: dict[str, Any], n: dict[str, Any], add: Report) -> None:
    for bound in _UPPER_BOUNDS:
        if bound in n and (bound not in o or n[bound] < o[bound]):
            add(f"{bound} lowered: {o.get(bound, '(none)')} -> {n[bound]}")
    for bound in _LOWER_BOUNDS:
        if bound in n and (bound not in o or n[bound] > o[bound]):
            if bound != "minimum" and bound not in o and n[bound] == 0:
                continue
            add(f"{bound} raised: {o.get(bound, '(none)')} -> {n[bound]}")
    for flag, bound in (("exclusiveMaximum", "maximum"), ("exclusiveMinimum", "minimum")):
        if n.get(flag) and not o.get(flag) and n.get(bound) == o.get(bound):
            add(f"{flag} turned on")


def _values_narrowed(o: dict[str, Any], n: dict[str, Any], add: Report) -> None:
    if "enum" in n:
        if "enum" not in o:
            add(f"values restricted to enum {n['enum']}")
        else:
            removed = [v for v in o["enum"] if v not in n["enum"]]
            if removed:
                add(f"enum values removed: {', '.join(map(str, removed))}")
    if "pattern" in n and n["pattern"] != o.get("pattern"):
        change = "changed" if "pattern" in o else "added"
        add(f"pattern {change}: {o.get('pattern', '(none)')} -> {n['pattern']}")
    if "multipleOf" in n and n["multipleOf"] != o.get("multipleOf"):
        add(f"multipleOf changed: {o.get('multipleOf', '(none)')} -> {n['multipleOf']}")
    if n.get("uniqueItems") and not o.get("uniqueItems"):
        add("uniqueItems turned on")
    if n.get("additionalProperties") is False and o.get("additionalProperties") is not False:
        add("additional properties no longer accepted")
