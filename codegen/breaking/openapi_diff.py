"""The OpenAPI diff: two versions of one document compared for JSON-breaking changes.

A removed operation, a removed or renamed operationId, a new required parameter or request
property, a parameter or request body becoming required, narrowed request bounds (max* lowered,
min* raised, enum values removed, pattern added or changed, ...), a changed type, a removed
response property, a response property no longer required, a removed success status code or
media type. Elements are a document plus a JSON pointer
(`openapi/user.yaml#/components/schemas/User/properties/name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from codegen.breaking.change import Change
from codegen.breaking.schema_rules import narrowed, type_changed
from codegen.openapi import HTTP_METHODS, Document, load_document

Pointer = tuple[str | int, ...]


def _pointer(parts: Pointer) -> str:
    escaped = (str(p).replace("~", "~0").replace("/", "~1").replace(" ", "%20") for p in parts)
    return "#/" + "/".join(escaped)


def _parse_ref(ref: str) -> Pointer:
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/"))


def _route_key(route: str) -> str:
    """`/messages/{id}` and `/messages/{message_id}` are the same route."""
    parts = route.split("/")
    return "/".join("{}" if p.startswith("{") and p.endswith("}") else p for p in parts)


def _template_names(route: str) -> list[str]:
    return [p[1:-1] for p in route.split("/") if p.startswith("{") and p.endswith("}")]


@dataclass(frozen=True)
class _Node:
    """A schema (or parameter, body, response) with the pointer it was found at."""

    doc: Document
    value: dict[str, Any]
    pointer: Pointer

    def deref(self) -> _Node:
        node = self
        for _ in range(32):
            ref = node.value.get("$ref")
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return node
            pointer = _parse_ref(ref)
            node = _Node(node.doc, node.doc.resolve({"$ref": ref}), pointer)
        return node

    def child(self, *parts: str | int) -> _Node | None:
        value: Any = self.value
        for part in parts:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and isinstance(part, int) and part < len(value):
                value = value[part]
            else:
                return None
        return _Node(self.doc, value, (*self.pointer, *parts)) if isinstance(value, dict) else None

    @property
    def element(self) -> str:
        return f"{self.doc.display}{_pointer(self.pointer)}"

    @property
    def line(self) -> int:
        return self.doc.line_of(list(self.pointer))


class _Report(Protocol):
    def __call__(self, what: str, node: _Node = ..., /) -> None: ...


@dataclass(frozen=True)
class _Operation:
    route: str
    method: str
    node: _Node
    path_item: _Node

    @property
    def label(self) -> str:
        op_id = self.node.value.get("operationId", "")
        return f"{self.method.upper()} {self.route}" + (f" ({op_id})" if op_id else "")

    def parameters(self) -> dict[tuple[str, str], _Node]:
        """Path-level then operation-level parameters, resolved, by (in, name)."""
        found: dict[tuple[str, str], _Node] = {}
        for owner in (self.path_item, self.node):
            for i, _ in enumerate(owner.value.get("parameters", [])):
                item = owner.child("parameters", i)
                if item is None:
                    continue
                param = item.deref()
                found[(str(param.value.get("in")), str(param.value.get("name")))] = param
        return found


def _operations(doc: Document | None) -> dict[tuple[str, str], _Operation]:
    if doc is None:
        return {}
    root = _Node(doc, doc.data, ())
    found = {}
    for route in doc.data.get("paths", {}):
        item = root.child("paths", route)
        if item is None:
            continue
        for method in HTTP_METHODS:
            node = item.child(method)
            if node is not None:
                found[(_route_key(route), method)] = _Operation(route, method, node, item)
    return found


class _OpenApiComparer:
    def __init__(self) -> None:
        self.found: dict[tuple[str, str], tuple[_Node, str, list[_Operation]]] = {}
        self.seen: set[tuple[Pointer, Pointer, str, str]] = set()

    def _add(self, node: _Node, what: str, operation: _Operation) -> None:
        """Record a change once per element, listing every operation it affects."""
        key = (node.element, what)
        if key in self.found:
            uses = self.found[key][2]
            if operation not in uses:
                uses.append(operation)
        else:
            self.found[key] = (node, what, [operation])

    def changes(self) -> list[Change]:
        out = []
        for node, what, uses in self.found.values():
            others = [op.node.value.get("operationId") or op.label for op in uses[1:]]
            also = f" (also {', '.join(others)})" if others else ""
            out.append(
                Change(node.doc.display, node.line, node.element, f"{uses[0].label}: {what}{also}")
            )
        return out

    def compare(self, old: Document | None, new: Document | None) -> None:
        new_ops = _operations(new)
        for key, op in _operations(old).items():
            current = new_ops.get(key)
            if current is None:
                self._add(op.node, "operation removed", op)
                continue
            self._operation(op, current)

    def _operation(self, old: _Operation, new: _Operation) -> None:
        old_id, new_id = old.node.value.get("operationId"), new.node.value.get("operationId")
        if old_id and old_id != new_id:
            what = f"operationId renamed {old_id} -> {new_id}" if new_id else "operationId removed"
            id_node = _Node(new.node.doc, new.node.value, (*new.node.pointer, "operationId"))
            self._add(id_node, what, old)

        old_params = old.parameters()
        # Path parameters are positional: `{id}` renamed `{message_id}` is the same parameter.
        renamed = {
            ("path", n): ("path", o)
            for o, n in zip(_template_names(old.route), _template_names(new.route), strict=True)
        }
        for key, param in new.parameters().items():
            before = old_params.get(renamed.get(key, key))
            where, name = key
            required = bool(param.value.get("required")) or where == "path"
            if before is None:
                if required:
                    self._add(param, f"new required {where} parameter {name!r}", new)
                continue
            was_required = bool(before.value.get("required")) or where == "path"
            if required and not was_required:
                self._add(param, f"{where} parameter {name!r} became required", new)
            self._child_schemas(before, param, "request", new, f"{where} parameter {name!r}")

        self._request_body(old, new)
        self._responses(old, new)

    def _request_body(self, old: _Operation, new: _Operation) -> None:
        new_body = new.node.child("requestBody")
        if new_body is None:
            return
        new_body = new_body.deref()
        old_body = old.node.child("requestBody")
        old_body = old_body.deref() if old_body is not None else None
        required = bool(new_body.value.get("required"))
        if required and (old_body is None or not old_body.value.get("required")):
            what = "request body became required" if old_body else "new required request body"
            self._add(new_body, what, new)
        if old_body is None:
            return
        for media in old_body.value.get("content", {}):
            old_media, new_media = (
                old_body.child("content", media),
                new_body.child("content", media),
            )
            if old_media is None:
                continue
            if new_media is None:
                self._add(new_body, f"request media type {media} no longer accepted", new)
                continue
            self._child_schemas(old_media, new_media, "request", new, "request body")

    def _responses(self, old: _Operation, new: _Operation) -> None:
        old_responses = old.node.child("responses")
        new_responses = new.node.child("responses")
        if old_responses is None or new_responses is None:
            return
        for code in old_responses.value:
            old_response = old_responses.child(code)
            if old_response is not None:
                self._response(code, old_response, new_responses, old, new)

    def _response(
        self, code: str, old_response: _Node, new_responses: _Node, old: _Operation, new: _Operation
    ) -> None:
        success = str(code).startswith("2")
        new_response = new_responses.child(code)
        if new_response is None:
            if success:
                self._add(old_response, f"success response {code} removed", old)
            return
        old_response, new_response = old_response.deref(), new_response.deref()
        for media in old_response.value.get("content", {}) or {}:
            old_media = old_response.child("content", media)
            new_media = new_response.child("content", media)
            if old_media is None:
                continue
            if new_media is None:
                if success:
                    self._add(new_response, f"response {code} no longer sends {media}", new)
                continue
            self._child_schemas(old_media, new_media, "response", new, f"response {code}")

    def _child_schemas(
        self, old: _Node, new: _Node, direction: str, op: _Operation, context: str
    ) -> None:
        """Compare the `schema` of two parameters or media types, when both have one."""
        old_schema, new_schema = old.child("schema"), new.child("schema")
        if old_schema is not None and new_schema is not None:
            self._schema(old_schema, new_schema, direction, op, context)

    def _schema(self, old: _Node, new: _Node, direction: str, op: _Operation, context: str) -> None:
        old, new = old.deref(), new.deref()
        key = (old.pointer, new.pointer, direction, op.label)
        if key in self.seen:
            return
        self.seen.add(key)
        if new.pointer[:2] == ("components", "schemas"):
            where = f"{direction} schema {new.pointer[2]}"
        else:
            where = f"{direction} schema of {context}"

        def add(what: str, node: _Node = new, /) -> None:
            self._add(node, f"{what} ({where})", op)

        if type_changed(old.value, new.value, direction, add):
            return
        if direction == "request":
            narrowed(old.value, new.value, add)
        self._properties(old, new, direction, op, context, add)
        self._subschemas(old, new, direction, op, context, add)

    def _subschemas(
        self, old: _Node, new: _Node, direction: str, op: _Operation, context: str, add: _Report
    ) -> None:
        """`items`, `additionalProperties`, `not` and the `allOf`/`anyOf`/`oneOf` alternatives."""
        for part in ("items", "additionalProperties", "not"):
            old_child, new_child = old.child(part), new.child(part)
            if old_child is not None and new_child is not None:
                self._schema(old_child, new_child, direction, op, context)
        for part in ("allOf", "anyOf", "oneOf"):
            old_list, new_list = old.value.get(part) or [], new.value.get(part) or []
            if part != "allOf" and len(new_list) < len(old_list) and direction == "request":
                add(f"{part} alternatives removed: {len(old_list)} -> {len(new_list)}")
            for i in range(min(len(old_list), len(new_list))):
                old_child, new_child = old.child(part, i), new.child(part, i)
                if old_child is not None and new_child is not None:
                    self._schema(old_child, new_child, direction, op, context)

    def _properties(
        self, old: _Node, new: _Node, direction: str, op: _Operation, context: str, add: _Report
    ) -> None:
        o, n = old.value, new.value
        old_props: dict[str, Any] = o.get("properties") or {}
        new_props: dict[str, Any] = n.get("properties") or {}
        old_required, new_required = set(o.get("required") or ()), set(n.get("required") or ())
        if direction == "request":
            for name in sorted(new_required - old_required):
                node = new.child("properties", name) or new
                if name in old_props:
                    add(f"property {name!r} became required", node)
                else:
                    add(f"new required property {name!r}", node)
            if n.get("additionalProperties") is False:
                for name in sorted(set(old_props) - set(new_props)):
                    node = old.child("properties", name) or old
                    add(f"property {name!r} removed (additional properties are rejected)", node)
        else:
            for name in sorted(set(old_props) - set(new_props)):
                add(f"property {name!r} removed", old.child("properties", name) or old)
            for name in sorted((old_required - new_required) & set(new_props)):
                add(f"property {name!r} no longer required", new.child("properties", name) or new)
        for name in sorted(set(old_props) & set(new_props)):
            old_child, new_child = old.child("properties", name), new.child("properties", name)
            if old_child is not None and new_child is not None:
                self._schema(old_child, new_child, direction, op, f"{context}.{name}")


def compare_openapi(old: Document | None, new: Document | None) -> list[Change]:
    """JSON-breaking differences from `old` to `new` (either may be absent)."""
    comparer = _OpenApiComparer()
    comparer.compare(old, new)
    return comparer.changes()


def documents(root: Path) -> dict[str, Document]:
    """The OpenAPI documents under `root`, by display name (`openapi/user.yaml`)."""
    found = {}
    for path in sorted((root / "openapi").glob("*.yaml")):
        display = f"openapi/{path.name}"
        found[display] = load_document(path, display)
    return found
