"""Cross-check: resources defined in both a .proto and an OpenAPI document must agree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2

from codegen import protos
from codegen.openapi import Document

RESOURCES = ("User", "Message", "Notification", "Conversation")

_FD = descriptor_pb2.FieldDescriptorProto
_INT32 = {_FD.TYPE_INT32, _FD.TYPE_SINT32, _FD.TYPE_SFIXED32, _FD.TYPE_UINT32, _FD.TYPE_FIXED32}
_INT64 = {_FD.TYPE_INT64, _FD.TYPE_SINT64, _FD.TYPE_SFIXED64, _FD.TYPE_UINT64, _FD.TYPE_FIXED64}


@dataclass(frozen=True)
class _ProtoField:
    name: str
    field: descriptor_pb2.FieldDescriptorProto
    where: str


@dataclass(frozen=True)
class _ProtoMessage:
    name: str
    where: str
    fields: dict[str, _ProtoField]


def _proto_messages(descriptors: descriptor_pb2.FileDescriptorSet) -> dict[str, _ProtoMessage]:
    found: dict[str, _ProtoMessage] = {}
    for located in protos.top_level_messages(descriptors):
        message = located.message
        if message.name not in RESOURCES:
            continue
        fields = {
            item.name: _ProtoField(name=item.name, field=item, where=located.field_where[item.name])
            for item in message.field
        }
        found[message.name] = _ProtoMessage(name=message.name, where=located.where, fields=fields)
    return found


def _compatible(
    field: descriptor_pb2.FieldDescriptorProto, schema: dict[str, Any], doc: Document
) -> str | None:
    """None when compatible, else what the proto field expects."""
    if field.label == _FD.LABEL_REPEATED:
        if schema.get("type") != "array":
            return "an array (repeated field)"
        inner = descriptor_pb2.FieldDescriptorProto()
        inner.CopyFrom(field)
        inner.label = _FD.LABEL_OPTIONAL
        return _compatible(
            inner, doc.resolve(schema.get("items", {})) | _ref(schema.get("items", {})), doc
        )
    if field.type == _FD.TYPE_MESSAGE:
        return _message_compatible(field, schema)
    return _scalar_compatible(field.type, schema)


def _message_compatible(
    field: descriptor_pb2.FieldDescriptorProto, schema: dict[str, Any]
) -> str | None:
    if field.type_name == ".google.protobuf.Timestamp":
        kind, fmt = schema.get("type"), schema.get("format")
        return None if (kind, fmt) == ("string", "date-time") else "string/date-time"
    expected = field.type_name.rsplit(".", 1)[-1]
    return None if schema.get("$ref", "").endswith("/" + expected) else f"$ref {expected}"


def _scalar_compatible(
    field_type: descriptor_pb2.FieldDescriptorProto.Type.ValueType, schema: dict[str, Any]
) -> str | None:
    kind, fmt = schema.get("type"), schema.get("format")
    if field_type == _FD.TYPE_STRING:
        return None if kind == "string" and fmt not in ("date-time", "byte") else "string"
    if field_type == _FD.TYPE_BYTES:
        return None if (kind, fmt) == ("string", "byte") else "string/byte"
    if field_type == _FD.TYPE_BOOL:
        return None if kind == "boolean" else "boolean"
    if field_type in _INT32:
        return None if kind == "integer" and fmt in (None, "int32") else "integer/int32"
    if field_type in _INT64:
        return None if kind == "integer" and fmt in (None, "int64") else "integer/int64"
    if field_type in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
        return None if kind == "number" else "number"
    if field_type == _FD.TYPE_ENUM:
        return None if kind == "string" and "enum" in schema else "string enum"
    return f"a mapping for protobuf type {field_type}"


def _ref(schema: dict[str, Any]) -> dict[str, Any]:
    return {"$ref": schema["$ref"]} if "$ref" in schema else {}


def cross_check(
    descriptors: descriptor_pb2.FileDescriptorSet, documents: Iterable[Document]
) -> list[str]:
    """Every disagreement between a proto resource and the same-named OpenAPI schema."""
    messages = _proto_messages(descriptors)
    problems: list[str] = []
    for doc in documents:
        schemas = doc.data.get("components", {}).get("schemas", {})
        for name in RESOURCES:
            if name not in schemas or name not in messages:
                continue
            message = messages[name]
            pointer = ["components", "schemas", name]
            properties = schemas[name].get("properties", {})
            for field_name, field in message.fields.items():
                if field_name not in properties:
                    problems.append(
                        f"{name}.{field_name}: defined at {field.where} but missing from "
                        f"{doc.where([*pointer, 'properties'])}"
                    )
                    continue
                raw = properties[field_name]
                schema = doc.resolve(raw) | _ref(raw)
                expected = _compatible(field.field, schema, doc)
                if expected is not None:
                    problems.append(
                        f"{name}.{field_name}: {field.where} needs {expected}, but "
                        f"{doc.where([*pointer, 'properties', field_name])} declares "
                        f"{schema.get('type') or schema.get('$ref')}"
                        + (f"/{schema['format']}" if "format" in schema else "")
                    )
            for prop in properties:
                if prop not in message.fields:
                    problems.append(
                        f"{name}.{prop}: declared at "
                        f"{doc.where([*pointer, 'properties', prop])} but missing from "
                        f"message {name} at {message.where}"
                    )
    return problems
