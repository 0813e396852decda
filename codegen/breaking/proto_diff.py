"""The proto diff: two FileDescriptorSets compared for wire- and JSON-breaking changes.

A removed message, field, enum, enum value, service or RPC; a field number changed for a name,
or reused with another name; a field's type or label (repeated) changed; an RPC's request or
response type or streaming changed; a renamed package. Elements are fully qualified proto names
(`missive.user.v1.User.email`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

from codegen import protos
from codegen.breaking.change import Change

_FD = descriptor_pb2.FieldDescriptorProto


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


def compile_protos(proto_root: Path, scratch: Path) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet of every proto under `proto_root` (empty if there is none)."""
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
