"""Breaking-change detection: the current contracts against the ones committed at a git ref.

`python -m codegen --breaking [REF]` (and `make check-breaking`) reads `proto_definitions/` and
`openapi/` as they were at REF (default: the merge base of HEAD with `main`, else `HEAD~`) with
`git show`, and reports every change that breaks a client built against them:

- protos (compared as FileDescriptorSets compiled by protoc): a removed message, field, enum,
  enum value, service or RPC; a field number changed for a name, or reused with another name;
  a field's type or label (repeated) changed; an RPC's request or response type or streaming
  changed; a renamed package;
- OpenAPI: a removed operation, a removed or renamed operationId, a new required parameter or
  request property, a parameter or request body becoming required, narrowed request bounds
  (max* lowered, min* raised, enum values removed, pattern added or changed, ...), a changed
  type, a removed response property, a response property no longer required, a removed
  success status code or media type.

Each change names its file, line and *element*: a fully qualified proto name
(`missive.user.v1.User.email`) or an OpenAPI document plus a JSON pointer
(`openapi/user.yaml#/components/schemas/User/properties/name`). A change made on purpose is
accepted by listing its element in `contracts-breaking-allow.txt` at the project root, one per
line, followed by `# why`.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from google.protobuf import descriptor_pb2

from codegen import protos
from codegen.errors import ContractError
from codegen.openapi import HTTP_METHODS, Document, load_document

ALLOWLIST = "contracts-breaking-allow.txt"
CONTRACT_DIRS = ("proto_definitions", "openapi")

_FD = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True, order=True)
class Change:
    """One breaking change: where it is, which element, and what happened to it."""

    file: str
    line: int
    element: str
    what: str

    def render(self) -> str:
        return f"{self.file}:{self.line}: {self.what}\n      element: {self.element}"


# --------------------------------------------------------------------------------------------
# git


class GitError(ContractError):
    """The ref cannot be read (not a repository, unknown ref, ...)."""


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except OSError as exc:  # no git at all: as if every command failed
        return subprocess.CompletedProcess(["git", *args], 127, b"", str(exc).encode())


def _out(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stdout.decode().strip()


def default_ref(root: Path) -> tuple[str, str] | None:
    """(commit, description) to compare with: merge base with `main`, else `HEAD~`, else None."""
    base = _git(root, "merge-base", "HEAD", "main")
    if base.returncode == 0 and _out(base):
        return _out(base), "the merge base with main"
    parent = _git(root, "rev-parse", "--verify", "--quiet", "HEAD~^{commit}")
    if parent.returncode == 0 and _out(parent):
        return _out(parent), "HEAD~ (no branch `main` to take a merge base with)"
    return None


def resolve_ref(root: Path, ref: str) -> str:
    result = _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode != 0 or not _out(result):
        reason = result.stderr.decode().strip() or "no such commit"
        raise GitError(f"cannot compare with {ref!r}: {reason}")
    return _out(result)


def export_contracts(root: Path, commit: str, dest: Path) -> None:
    """Write `proto_definitions/` and `openapi/` as they are at `commit` under `dest`."""
    top = _git(root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise GitError(f"{root} is not in a git repository")
    toplevel = Path(_out(top))
    prefix = root.resolve().relative_to(toplevel.resolve()).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    for directory in CONTRACT_DIRS:
        listing = _git(
            toplevel, "ls-tree", "-r", "-z", "--name-only", commit, "--", prefix + directory
        )
        if listing.returncode != 0:
            raise GitError(f"git ls-tree {commit}: {listing.stderr.decode().strip()}")
        for name in filter(None, listing.stdout.decode().split("\0")):
            shown = _git(toplevel, "show", f"{commit}:{name}")
            if shown.returncode != 0:
                raise GitError(f"git show {commit}:{name}: {shown.stderr.decode().strip()}")
            target = dest / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(shown.stdout)


# --------------------------------------------------------------------------------------------
# protos


@dataclass(frozen=True)
class _Located:
    file: str
    line: int


@dataclass(frozen=True)
class _Message(_Located):
    proto: descriptor_pb2.DescriptorProto
    field_lines: dict[str, int]


@dataclass(frozen=True)
class _Enum(_Located):
    proto: descriptor_pb2.EnumDescriptorProto
    value_lines: dict[str, int]


@dataclass(frozen=True)
class _Service(_Located):
    proto: descriptor_pb2.ServiceDescriptorProto
    method_lines: dict[str, int]


@dataclass
class _ProtoIndex:
    packages: dict[str, tuple[str, _Located]] = field(default_factory=dict)
    messages: dict[str, _Message] = field(default_factory=dict)
    enums: dict[str, _Enum] = field(default_factory=dict)
    services: dict[str, _Service] = field(default_factory=dict)


class _FileIndexer:
    """Adds one file's messages, enums and services, with their lines, to an index."""

    def __init__(self, index: _ProtoIndex, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.index = index
        self.display = f"proto_definitions/{file.name}"
        self.lines = {
            tuple(location.path): location.span[0] + 1
            for location in file.source_code_info.location
        }
        index.packages[file.name] = (file.package, _Located(self.display, self.line((2,))))
        prefix = f"{file.package}." if file.package else ""
        for i, message in enumerate(file.message_type):
            self.message(message, prefix, (4, i))
        for i, enum in enumerate(file.enum_type):
            self.enum(enum, prefix, (5, i))
        for i, service in enumerate(file.service):
            index.services[prefix + service.name] = _Service(
                self.display,
                self.line((6, i)),
                service,
                {m.name: self.line((6, i, 2, j)) for j, m in enumerate(service.method)},
            )

    def line(self, path: tuple[int, ...]) -> int:
        return self.lines.get(path, 1)

    def message(
        self, message: descriptor_pb2.DescriptorProto, scope: str, path: tuple[int, ...]
    ) -> None:
        name = scope + message.name
        self.index.messages[name] = _Message(
            self.display,
            self.line(path),
            message,
            {f.name: self.line((*path, 2, i)) for i, f in enumerate(message.field)},
        )
        for i, nested in enumerate(message.nested_type):
            self.message(nested, name + ".", (*path, 3, i))
        for i, enum in enumerate(message.enum_type):
            self.enum(enum, name + ".", (*path, 4, i))

    def enum(
        self, enum: descriptor_pb2.EnumDescriptorProto, scope: str, path: tuple[int, ...]
    ) -> None:
        self.index.enums[scope + enum.name] = _Enum(
            self.display,
            self.line(path),
            enum,
            {value.name: self.line((*path, 2, i)) for i, value in enumerate(enum.value)},
        )


def _index(descriptors: descriptor_pb2.FileDescriptorSet) -> _ProtoIndex:
    index = _ProtoIndex()
    for file in descriptors.file:
        _FileIndexer(index, file)
    return index


def _compile(proto_root: Path, scratch: Path) -> descriptor_pb2.FileDescriptorSet:
    if not proto_root.is_dir() or not any(proto_root.rglob("*.proto")):
        return descriptor_pb2.FileDescriptorSet()
    scratch.mkdir(parents=True, exist_ok=True)
    return protos.load_descriptors(proto_root, protos.find_protos(proto_root), scratch)


def _type_of(f: descriptor_pb2.FieldDescriptorProto) -> str:
    if f.type_name:
        return f.type_name.lstrip(".")
    return _FD.Type.Name(f.type).removeprefix("TYPE_").lower()


def _describe(f: descriptor_pb2.FieldDescriptorProto) -> str:
    repeated = "repeated " if f.label == _FD.LABEL_REPEATED else ""
    return f"{repeated}{_type_of(f)} {f.name} = {f.number}"


class _ProtoComparer:
    def __init__(self, old: _ProtoIndex, new: _ProtoIndex) -> None:
        self.old, self.new = old, new
        self.changes: list[Change] = []
        # A renamed package is reported once; its elements are then compared under the new name.
        self.renamed: dict[str, str] = {}
        for name, (package, _) in old.packages.items():
            if name in new.packages and new.packages[name][0] != package:
                new_package, new_where = new.packages[name]
                if package and new_package:
                    self.renamed[package] = new_package
                self._add(
                    new_where,
                    f"proto_definitions/{name}#package",
                    f"package renamed: {package or '(none)'} -> {new_package or '(none)'} in "
                    f"{name} (every type name and RPC path of the file changes)",
                )

    def _add(self, where: _Located | tuple[str, int], element: str, what: str) -> None:
        file, line = (where.file, where.line) if isinstance(where, _Located) else where
        self.changes.append(Change(file, line, element, what))

    def _moved(self, name: str) -> str:
        for old, new in self.renamed.items():
            if name.startswith(old + "."):
                return new + name[len(old) :]
        return name

    def _same_type(self, old: str, new: str) -> bool:
        return self._moved(old) == new or old == new

    def run(self) -> list[Change]:
        for name, message in sorted(self.old.messages.items()):
            self._message(name, message)
        for name, enum in sorted(self.old.enums.items()):
            self._enum(name, enum)
        for name, service in sorted(self.old.services.items()):
            self._service(name, service)
        return self.changes

    def _message(self, name: str, old: _Message) -> None:
        new = self.new.messages.get(self._moved(name))
        if new is None:
            if not old.proto.options.map_entry:  # a removed map field is reported as a field
                self._add(old, name, f"message removed: {name}")
            return
        new_by_name = {f.name: f for f in new.proto.field}
        new_by_number = {f.number: f for f in new.proto.field}
        for f in old.proto.field:
            element = f"{name}.{f.name}"
            current = new_by_name.get(f.name)
            if current is None:
                reused = new_by_number.get(f.number)
                if reused is not None:
                    self._add(
                        (new.file, new.field_lines[reused.name]),
                        element,
                        f"field number {f.number} of {name} reused with another name: "
                        f"was {_describe(f)}, is now {_describe(reused)} (JSON names change)",
                    )
                    self._field_shape(element, f, reused, new)
                else:
                    self._add(
                        (old.file, old.field_lines[f.name]),
                        element,
                        f"field removed from {name}: {_describe(f)}",
                    )
                continue
            if current.number != f.number:
                self._add(
                    (new.file, new.field_lines[current.name]),
                    element,
                    f"field number changed for {element}: {f.number} -> {current.number}",
                )
                continue
            self._field_shape(element, f, current, new)

    def _field_shape(
        self,
        element: str,
        old: descriptor_pb2.FieldDescriptorProto,
        new: descriptor_pb2.FieldDescriptorProto,
        where: _Message,
    ) -> None:
        at = (where.file, where.field_lines[new.name])
        if old.type != new.type or not self._same_type(
            old.type_name.lstrip("."), new.type_name.lstrip(".")
        ):
            self._add(
                at, element, f"field type changed for {element}: {_type_of(old)} -> {_type_of(new)}"
            )
        old_repeated = old.label == _FD.LABEL_REPEATED
        if old_repeated != (new.label == _FD.LABEL_REPEATED):
            change = "became repeated" if not old_repeated else "is no longer repeated"
            self._add(at, element, f"field label changed: {element} {change}")

    def _enum(self, name: str, old: _Enum) -> None:
        new = self.new.enums.get(self._moved(name))
        if new is None:
            self._add(old, name, f"enum removed: {name}")
            return
        new_by_name = {v.name: v for v in new.proto.value}
        new_by_number = {v.number: v for v in new.proto.value}
        for value in old.proto.value:
            element = f"{name}.{value.name}"
            current = new_by_name.get(value.name)
            if current is None:
                reused = new_by_number.get(value.number)
                if reused is not None:
                    self._add(
                        (new.file, new.value_lines[reused.name]),
                        element,
                        f"enum value {value.number} of {name} renamed: {value.name} -> "
                        f"{reused.name} (JSON names change)",
                    )
                else:
                    self._add(
                        (old.file, old.value_lines[value.name]),
                        element,
                        f"enum value removed: {element} = {value.number}",
                    )
            elif current.number != value.number:
                self._add(
                    (new.file, new.value_lines[current.name]),
                    element,
                    f"enum value number changed for {element}: {value.number} -> {current.number}",
                )

    def _service(self, name: str, old: _Service) -> None:
        new = self.new.services.get(self._moved(name))
        if new is None:
            self._add(old, name, f"service removed: {name}")
            return
        methods = {m.name: m for m in new.proto.method}
        for method in old.proto.method:
            element = f"{name}.{method.name}"
            current = methods.get(method.name)
            if current is None:
                self._add(
                    (old.file, old.method_lines[method.name]), element, f"RPC removed: {element}"
                )
                continue
            at = (new.file, new.method_lines[method.name])
            for role, before, after in (
                ("request", method.input_type, current.input_type),
                ("response", method.output_type, current.output_type),
            ):
                if not self._same_type(before.lstrip("."), after.lstrip(".")):
                    self._add(
                        at,
                        element,
                        f"RPC {role} type changed for {element}: "
                        f"{before.lstrip('.')} -> {after.lstrip('.')}",
                    )
            for role, was, now in (
                ("client", method.client_streaming, current.client_streaming),
                ("server", method.server_streaming, current.server_streaming),
            ):
                if was != now:
                    state = "now streams" if now else "no longer streams"
                    self._add(at, element, f"RPC streaming changed: {element} {role} {state}")


def compare_protos(
    old: descriptor_pb2.FileDescriptorSet, new: descriptor_pb2.FileDescriptorSet
) -> list[Change]:
    """Wire- and JSON-breaking differences from `old` to `new`."""
    return _ProtoComparer(_index(old), _index(new)).run()


# --------------------------------------------------------------------------------------------
# OpenAPI

Pointer = tuple[str | int, ...]

_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum")
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum")
_WIDER_FORMATS = {("int32", "int64"), ("float", "double")}


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
            old_schema, new_schema = before.child("schema"), param.child("schema")
            if old_schema is not None and new_schema is not None:
                self._schema(old_schema, new_schema, "request", new, f"{where} parameter {name!r}")

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
            old_schema, new_schema = old_media.child("schema"), new_media.child("schema")
            if old_schema is not None and new_schema is not None:
                self._schema(old_schema, new_schema, "request", new, "request body")

    def _responses(self, old: _Operation, new: _Operation) -> None:
        old_responses = old.node.child("responses")
        new_responses = new.node.child("responses")
        if old_responses is None or new_responses is None:
            return
        for code in old_responses.value:
            success = str(code).startswith("2")
            old_response = old_responses.child(code)
            new_response = new_responses.child(code)
            if old_response is None:
                continue
            if new_response is None:
                if success:
                    self._add(old_response, f"success response {code} removed", old)
                continue
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
                old_schema, new_schema = old_media.child("schema"), new_media.child("schema")
                if old_schema is not None and new_schema is not None:
                    self._schema(old_schema, new_schema, "response", new, f"response {code}")

    def _schema(self, old: _Node, new: _Node, direction: str, op: _Operation, context: str) -> None:
        old, new = old.deref(), new.deref()
        key = (old.pointer, new.pointer, direction, op.label)
        if key in self.seen:
            return
        self.seen.add(key)
        o, n = old.value, new.value
        if new.pointer[:2] == ("components", "schemas"):
            where = f"{direction} schema {new.pointer[2]}"
        else:
            where = f"{direction} schema of {context}"

        def add(what: str, node: _Node = new, /) -> None:
            self._add(node, f"{what} ({where})", op)

        if "type" in o and "type" in n and o["type"] != n["type"]:
            add(f"type changed: {o['type']} -> {n['type']}")
            return
        if "type" not in o and "type" in n and direction == "request":
            add(f"type restricted to {n['type']}")
        old_format, new_format = o.get("format"), n.get("format")
        if old_format != new_format:
            if direction == "request":
                if new_format is not None and (old_format, new_format) not in _WIDER_FORMATS:
                    add(f"format changed: {old_format or '(none)'} -> {new_format}")
            elif old_format is not None and (new_format, old_format) not in _WIDER_FORMATS:
                add(f"format changed: {old_format} -> {new_format or '(none)'}")
        if o.get("nullable") and not n.get("nullable") and direction == "request":
            add("null no longer accepted")
        if n.get("nullable") and not o.get("nullable") and direction == "response":
            add("may now be null")

        if direction == "request":
            self._narrowed(o, n, add)
        self._properties(old, new, direction, op, context, add)

        for part in ("items", "additionalProperties", "not"):
            old_child, new_child = old.child(part), new.child(part)
            if old_child is not None and new_child is not None:
                self._schema(old_child, new_child, direction, op, context)
        for part in ("allOf", "anyOf", "oneOf"):
            old_list, new_list = o.get(part) or [], n.get(part) or []
            if part != "allOf" and len(new_list) < len(old_list):
                if direction == "request":
                    add(f"{part} alternatives removed: {len(old_list)} -> {len(new_list)}")
            for i in range(min(len(old_list), len(new_list))):
                old_child, new_child = old.child(part, i), new.child(part, i)
                if old_child is not None and new_child is not None:
                    self._schema(old_child, new_child, direction, op, context)

    @staticmethod
    def _narrowed(o: dict[str, Any], n: dict[str, Any], add: _Report) -> None:
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


def _documents(root: Path) -> dict[str, Document]:
    found = {}
    for path in sorted((root / "openapi").glob("*.yaml")):
        display = f"openapi/{path.name}"
        found[display] = load_document(path, display)
    return found


# --------------------------------------------------------------------------------------------
# allowlist and the whole check


@dataclass(frozen=True)
class Allowlist:
    entries: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Allowlist:
        """`ELEMENT  # reason` per line; blank lines and `#` lines are ignored."""
        if not path.exists():
            return cls({})
        entries = {}
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            element, _, rest = line.partition(" ")
            reason = rest.strip().removeprefix("#").strip()
            if not rest.strip().startswith("#") or not reason:
                raise ContractError(
                    f"{path.name}:{number}: expected `ELEMENT  # why the break is intended`, "
                    f"got {raw!r}"
                )
            entries[element] = reason
        return cls(entries)


@dataclass
class Report:
    against: str
    breaking: list[Change]
    allowed: list[tuple[Change, str]]
    unused: list[str]


def compare_trees(old_root: Path, new_root: Path, scratch: Path) -> list[Change]:
    """Every breaking change from the contracts under `old_root` to those under `new_root`."""
    try:
        old_set = _compile(old_root / "proto_definitions", scratch / "old")
        old_docs = _documents(old_root)
    except ContractError as exc:
        raise ContractError(f"the old contracts do not load: {exc}") from exc
    new_set = _compile(new_root / "proto_definitions", scratch / "new")
    new_docs = _documents(new_root)
    changes = compare_protos(old_set, new_set)
    for display in sorted(old_docs.keys() | new_docs.keys()):
        changes += compare_openapi(old_docs.get(display), new_docs.get(display))
    return sorted(set(changes))


def check(root: Path, ref: str | None) -> Report | None:
    """Compare the contracts under `root` with those at `ref` (None: the default); None if
    there is nothing to compare with."""
    if ref is None:
        found = default_ref(root)
        if found is None:
            return None
        commit, description = found
    else:
        commit, description = resolve_ref(root, ref), ref
    allowlist = Allowlist.load(root / ALLOWLIST)
    with tempfile.TemporaryDirectory(prefix="codegen-breaking-") as tmp:
        old_root = Path(tmp) / "old"
        old_root.mkdir()
        export_contracts(root, commit, old_root)
        changes = compare_trees(old_root, root, Path(tmp) / "scratch")
    breaking = [c for c in changes if c.element not in allowlist.entries]
    allowed = [(c, allowlist.entries[c.element]) for c in changes if c.element in allowlist.entries]
    used = {c.element for c, _ in allowed}
    unused = [element for element in allowlist.entries if element not in used]
    return Report(f"{description} ({commit[:12]})", breaking, allowed, unused)


def render(report: Report) -> Iterator[tuple[bool, str]]:
    """(is_error, line) pairs for the CLI."""
    for change, reason in report.allowed:
        yield False, f"allowed: {change.file}:{change.line}: {change.what}  # {reason}"
    for element in report.unused:
        yield False, f"note: {ALLOWLIST} lists {element}, which no longer changes; remove it"
    if not report.breaking:
        yield False, f"check-breaking: no breaking contract changes against {report.against}"
        return
    count = len(report.breaking)
    plural = "change" if count == 1 else "changes"
    yield True, f"check-breaking: {count} breaking {plural} against {report.against}:"
    for change in report.breaking:
        yield True, "  " + change.render()
    yield (
        True,
        (
            f"check-breaking: if a change is intended, list its element in {ALLOWLIST} "
            "followed by `# why`"
        ),
    )
