"""Loading and validating OpenAPI documents, with errors that name the file and line."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator
from jsonschema.exceptions import ValidationError
from openapi_spec_validator import OpenAPIV30SpecValidator
from openapi_spec_validator.schemas import schema_v30

from codegen.errors import ContractError

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Document:
    """A parsed OpenAPI document plus the YAML node tree used to locate elements by line."""

    path: Path
    data: dict[str, Any]
    node: yaml.Node
    display: str = field(default="")

    def line_of(self, pointer: Sequence[str | int]) -> int:
        """1-based line of the element at a JSON pointer (the closest existing ancestor): the
        line of its key in a mapping, where a block value starts on the line after."""
        node = self.node
        line: int = node.start_mark.line
        for part in pointer:
            found = _child(node, part)
            if found is None:
                break
            line, node = found[0].start_mark.line, found[1]
        return line + 1

    def where(self, pointer: Sequence[str | int]) -> str:
        return f"{self.display}:{self.line_of(pointer)}"

    def resolve(self, item: dict[str, Any]) -> dict[str, Any]:
        """Follow a local `$ref` (one or more hops); other objects are returned as they are."""
        seen = 0
        while "$ref" in item:
            ref = item["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ContractError(f"{self.display}: only local $ref are supported, got {ref!r}")
            target: Any = self.data
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            item = target
            seen += 1
            if seen > 32:
                raise ContractError(f"{self.display}: $ref cycle at {ref}")
        return item

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(path, method, operation) for every operation, in document order."""
        for route, item in self.data.get("paths", {}).items():
            for method in HTTP_METHODS:
                if method in item:
                    yield route, method, item[method]


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of a mapping entry, or (item, item) of a sequence item."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child, child
    return None


def load_document(path: Path, display: str) -> Document:
    """Parse and validate an OpenAPI 3.0 document; raise ContractError naming file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(f"{display}: cannot read: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise ContractError(f"{display}:{line}: invalid YAML: {exc.problem or exc}") from exc
    if node is None or not isinstance(data, dict):
        raise ContractError(f"{display}:1: not an OpenAPI document (expected a mapping)")
    document = Document(path=path, data=data, node=node, display=display)
    version = str(data.get("openapi", ""))
    if not version.startswith("3.0."):
        raise ContractError(
            f"{document.where(['openapi'])}: expected `openapi: 3.0.x`, got {version!r}"
        )
    problems = _schema_problems(document) or _keyword_problems(document)
    if problems:
        problems.sort(key=lambda problem: problem[0])
        lines = [f"{document.display}:{line}: {text}" for line, text in problems[:10]]
        more = len(problems) - len(lines)
        if more:
            lines.append(f"... and {more} more")
        raise ContractError("invalid OpenAPI document:\n  " + "\n  ".join(lines))
    _check_conventions(document)
    return document


_MESSAGE_LIMIT = 200


def _schema_problems(document: Document) -> list[tuple[int, str]]:
    """The document checked against the OpenAPI 3.0 JSON schema: (line, one-line problem).

    Each failure of a `oneOf`/`anyOf` is narrowed to its most specific cause (the deepest
    failing element), so `maxLength: two-hundred` is reported at its own line as a `type` rule
    rather than as "the whole schema object matches no alternative".
    """
    validator = Draft4Validator(dict(schema_v30))
    problems = []
    for error in validator.iter_errors(document.data):
        cause = _cause(error)
        unexpected = _unexpected_key(cause)
        pointer = [*cause.absolute_path, *unexpected]
        message = f"{unexpected[0]!r} is not an allowed key here" if unexpected else None
        problems.append((document.line_of(pointer), _describe(pointer, cause, message)))
    return problems


def _cause(error: ValidationError) -> ValidationError:
    """The most specific failure under a `oneOf`/`anyOf`: the deepest one, ignoring the
    alternative "it is a `$ref`" that every schema, parameter and response may also be."""
    while error.context:
        candidates = [
            sub
            for sub in error.context
            if not (sub.validator == "required" and "'$ref'" in sub.message)
        ]
        if not candidates:
            break
        error = max(
            candidates,
            key=lambda sub: (len(sub.absolute_path), sub.validator not in ("oneOf", "anyOf")),
        )
    return error


def _unexpected_key(error: ValidationError) -> list[str | int]:
    """For a key that is not allowed (a misspelt `maxLenght`), the key, so the report points
    at its own line rather than at the object holding it."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return []
    schema = error.schema if isinstance(error.schema, dict) else {}
    known = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    for key in error.instance:
        if key not in known and not any(re.search(pattern, key) for pattern in patterns):
            return [key]
    return []


def _keyword_problems(document: Document) -> list[tuple[int, str]]:
    """openapi-spec-validator's checks beyond the JSON schema (defaults against their schema,
    path parameters, duplicate operation ids); their paths are relative to the element checked,
    so the element is found by its value."""
    problems = []
    for error in OpenAPIV30SpecValidator(document.data).iter_errors():
        pointer = _locate(document, list(error.absolute_path), error.instance)
        problems.append((document.line_of(pointer), _describe(pointer, error)))
    return problems


def _describe(
    pointer: Sequence[str | int], error: ValidationError, message: str | None = None
) -> str:
    """`a.b.c: message (rule: keyword)` on one line, with no dump of a whole object."""
    message = message or error.message
    instance = error.instance
    shown = repr(instance)
    if isinstance(instance, (dict, list)) and len(shown) > 40 and message.startswith(shown):
        message = (
            "the " + ("object" if isinstance(instance, dict) else "array") + message[len(shown) :]
        )
    message = " ".join(message.split())
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    where = ".".join(str(part) for part in pointer) or "(document)"
    rule = error.validator if isinstance(error.validator, str) else None
    if rule:
        value = error.validator_value
        plain = value if isinstance(value, (str, int, float, bool)) else None
        rule = f"{rule}: {plain}" if plain is not None and len(str(plain)) <= 60 else rule
    return f"{where}: {message}" + (f" (rule: {rule})" if rule else "")


_MISSING = object()


def _follow(value: Any, path: list[str | int]) -> Any:
    """What `path` leads to from `value`, or _MISSING if it leads nowhere."""
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            return _MISSING
    return value


def _locate(document: Document, relative: list[str | int], instance: Any) -> list[str | int]:
    """The document pointer of an element reported relative to an unknown parent: the first
    place (a `default` or `example` first) where `relative` leads to `instance`."""
    candidates: list[list[str | int]] = []

    def walk(value: Any, pointer: list[str | int]) -> None:
        target = _follow(value, relative)
        if target is not _MISSING and target == instance and type(target) is type(instance):
            candidates.append(pointer + relative)
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, [*pointer, key])
        elif isinstance(value, list):
            for index, child in enumerate(value):
                walk(child, [*pointer, index])

    walk(document.data, [])
    if not candidates:
        return relative
    preferred = [c for c in candidates if any(p in ("default", "example") for p in c[-2:])]
    return (preferred or candidates)[0]


def _check_conventions(document: Document) -> None:
    """Rules the generator relies on, beyond what the OpenAPI schema itself requires."""
    seen: dict[str, str] = {}
    for route, method, operation in document.operations():
        pointer = ["paths", route, method]
        op_id = operation.get("operationId")
        if not isinstance(op_id, str) or not op_id.isidentifier():
            raise ContractError(
                f"{document.where(pointer)}: {method.upper()} {route} needs an operationId "
                "that is a valid identifier"
            )
        if op_id in seen:
            raise ContractError(
                f"{document.where(pointer)}: operationId {op_id!r} already used by {seen[op_id]}"
            )
        seen[op_id] = f"{method.upper()} {route}"
