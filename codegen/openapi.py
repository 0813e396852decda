"""Loading and validating OpenAPI documents, with errors that name the file and line."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from openapi_spec_validator import OpenAPIV30SpecValidator

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
        """1-based line of the element at a JSON pointer (the closest existing ancestor)."""
        node = self.node
        for part in pointer:
            child = _child(node, part)
            if child is None:
                break
            node = child
        line: int = node.start_mark.line
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


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == str(part):
                found: yaml.Node = value
                return found
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
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
    errors = sorted(
        OpenAPIV30SpecValidator(data).iter_errors(),
        key=lambda error: document.line_of(list(error.absolute_path)),
    )
    if errors:
        lines = [
            f"{document.where(list(error.absolute_path))}: {error.message}" for error in errors[:10]
        ]
        raise ContractError("invalid OpenAPI document:\n  " + "\n  ".join(lines))
    _check_conventions(document)
    return document


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
