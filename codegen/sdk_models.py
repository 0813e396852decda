"""Check: the SDK's public models carry exactly the fields of the contract types they mirror.

`missive_client`'s result types (`clients/python/missive_client/_models.py`) are written by
hand, so that both transports convert into one set of frozen dataclasses with documented
fields. A field added to a contract type (say `Message.subject` in the proto and the OpenAPI
document) must reach its SDK model too: this check fails codegen, naming the field and both
locations, whenever a model and its contract types disagree (a field on one side only, or of
another type than the proto field's: `int` for int64, `datetime` for a Timestamp, the mirroring
model for a message, `tuple[..., ...]` for a repeated field). The models are read with `ast`
(never imported: the SDK imports the generated tree that codegen is about to replace).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import descriptor_pb2

from codegen import protos
from codegen.errors import ContractError
from codegen.openapi import Document

SDK_MODELS = Path("clients/python/missive_client/_models.py")
"""The hand-written public models, relative to the project root."""


@dataclass(frozen=True)
class Mirror:
    """The contract types an SDK model mirrors, and its intended differences (with reasons)."""

    proto: str | None
    """Full name of the proto message, e.g. `missive.message.v1.Message`."""
    openapi: tuple[str, str] | None
    """(document file name, schema name), e.g. `("message.yaml", "Message")`."""
    sdk_only: dict[str, str] = field(default_factory=dict)
    """Fields the SDK model adds, each with the reason."""
    contract_only: dict[str, str] = field(default_factory=dict)
    """Contract fields the SDK model leaves out on purpose, each with the reason."""


MIRRORS: dict[str, Mirror | None] = {
    "User": Mirror("missive.user.v1.User", ("user.yaml", "User")),
    "Message": Mirror("missive.message.v1.Message", ("message.yaml", "Message")),
    "Conversation": Mirror("missive.message.v1.Conversation", ("message.yaml", "Conversation")),
    "Notification": Mirror(
        "missive.notification.v1.Notification", ("notification.yaml", "Notification")
    ),
    "Subscription": Mirror(
        "missive.notification.v1.SubscriptionStatus", ("notification.yaml", "SubscriptionStatus")
    ),
    "Token": Mirror(
        "missive.user.v1.AuthenticateUserResponse",
        ("user.yaml", "LoginResponse"),
        sdk_only={"email": "the address the caller signed in with (from the request)"},
        contract_only={"authenticated": "always true in a token; a failed sign-in raises"},
    ),
    # SDK-only types, not copies of a contract type.
    "ServiceHealth": None,
    "Page": None,
}
"""Every dataclass of the SDK models: the contract types it mirrors, or None if SDK-only."""


@dataclass(frozen=True)
class _Fields:
    where: str
    fields: dict[str, str]
    """field name -> `file:line` of its declaration."""
    types: dict[str, str] = field(default_factory=dict)
    """field name -> its Python type (`str`, `datetime`, `tuple[Message, ...]`), where known."""


_FD = descriptor_pb2.FieldDescriptorProto
_PYTHON_TYPES = {
    _FD.TYPE_STRING: "str",
    _FD.TYPE_BYTES: "bytes",
    _FD.TYPE_BOOL: "bool",
    _FD.TYPE_DOUBLE: "float",
    _FD.TYPE_FLOAT: "float",
    **dict.fromkeys(
        (
            _FD.TYPE_INT32,
            _FD.TYPE_SINT32,
            _FD.TYPE_SFIXED32,
            _FD.TYPE_UINT32,
            _FD.TYPE_FIXED32,
            _FD.TYPE_INT64,
            _FD.TYPE_SINT64,
            _FD.TYPE_SFIXED64,
            _FD.TYPE_UINT64,
            _FD.TYPE_FIXED64,
        ),
        "int",
    ),
}
"""The SDK type of each proto scalar (an SDK model may also widen it with `| None`)."""


def _proto_python_type(item: descriptor_pb2.FieldDescriptorProto) -> str | None:
    """The Python type an SDK model declares for a proto field; None when any will do."""
    if item.type == _FD.TYPE_MESSAGE:
        if item.type_name == ".google.protobuf.Timestamp":
            base = "datetime"
        else:
            full = item.type_name.lstrip(".")
            models = [
                name
                for name, mirror in MIRRORS.items()
                if mirror is not None and mirror.proto == full
            ]
            if not models:
                return None
            base = models[0]
    elif item.type in _PYTHON_TYPES:
        base = _PYTHON_TYPES[item.type]
    else:
        return None  # enums: a Literal or a str, as the model documents
    return f"tuple[{base}, ...]" if item.label == _FD.LABEL_REPEATED else base


def _annotation_type(annotation: ast.expr) -> str:
    """The declared type without `| None` / `Optional[...]`, as source text."""
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        parts = [annotation.left, annotation.right]
        kept = [
            part for part in parts if not (isinstance(part, ast.Constant) and part.value is None)
        ]
        if len(kept) == 1:
            return _annotation_type(kept[0])
    if (
        isinstance(annotation, ast.Subscript)
        and isinstance(annotation.value, ast.Name)
        and annotation.value.id == "Optional"
    ):
        return _annotation_type(annotation.slice)
    return ast.unparse(annotation)


def _sdk_classes(root: Path) -> dict[str, _Fields]:
    path = root / SDK_MODELS
    display = SDK_MODELS.as_posix()
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=display)
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise ContractError(f"{display}: cannot read the SDK models: {exc}") from exc
    classes: dict[str, _Fields] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or not _is_dataclass(node):
            continue
        declared = [
            statement
            for statement in node.body
            if isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and not _is_class_var(statement.annotation)
        ]
        classes[node.name] = _Fields(
            where=f"{display}:{node.lineno}",
            fields={
                statement.target.id: f"{display}:{statement.lineno}"
                for statement in declared
                if isinstance(statement.target, ast.Name)
            },
            types={
                statement.target.id: _annotation_type(statement.annotation)
                for statement in declared
                if isinstance(statement.target, ast.Name)
            },
        )
    return classes


def _is_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def _is_class_var(annotation: ast.expr) -> bool:
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name == "ClassVar"


def _proto_messages(descriptors: descriptor_pb2.FileDescriptorSet) -> dict[str, _Fields]:
    found: dict[str, _Fields] = {}
    for located in protos.top_level_messages(descriptors):
        types = {
            item.name: python_type
            for item in located.message.field
            if (python_type := _proto_python_type(item)) is not None
        }
        found[f"{located.package}.{located.message.name}"] = _Fields(
            where=located.where, fields=located.field_where, types=types
        )
    return found


def _openapi_schema(documents: Iterable[Document], file: str, schema: str) -> _Fields | None:
    for doc in documents:
        if doc.path.name != file:
            continue
        schemas = doc.data.get("components", {}).get("schemas", {})
        if schema not in schemas:
            return None
        pointer = ["components", "schemas", schema, "properties"]
        properties = doc.resolve(schemas[schema]).get("properties", {})
        return _Fields(
            where=doc.where(pointer),
            fields={name: doc.where([*pointer, name]) for name in properties},
        )
    return None


def check_sdk_models(
    root: Path, descriptors: descriptor_pb2.FileDescriptorSet, documents: Iterable[Document]
) -> list[str]:
    """Every disagreement between an SDK model and the contract types it mirrors."""
    documents = list(documents)
    classes = _sdk_classes(root)
    messages = _proto_messages(descriptors)
    problems: list[str] = []
    for name, model in classes.items():
        problems += _check_model(name, model, messages, documents)
    for name in MIRRORS:
        if name not in classes:
            problems.append(
                f"{name}: listed in MIRRORS of codegen/sdk_models.py but no such dataclass in "
                f"{SDK_MODELS.as_posix()}"
            )
    return sorted(set(problems), key=problems.index)


def _check_model(
    name: str, model: _Fields, messages: dict[str, _Fields], documents: list[Document]
) -> list[str]:
    if name not in MIRRORS:
        return [
            f"{name}: SDK model at {model.where} mirrors no contract type: add it to "
            "MIRRORS in codegen/sdk_models.py (None if it is SDK-only)"
        ]
    mirror = MIRRORS[name]
    if mirror is None:
        return []
    problems, contracts = _contracts(name, model, mirror, messages, documents)
    for label, contract in contracts:
        problems += _compare(name, model, mirror, label, contract)
    return problems


def _contracts(
    name: str,
    model: _Fields,
    mirror: Mirror,
    messages: dict[str, _Fields],
    documents: list[Document],
) -> tuple[list[str], list[tuple[str, _Fields]]]:
    """The contract types `mirror` names, labelled, and a problem for each that is gone."""
    problems: list[str] = []
    contracts: list[tuple[str, _Fields]] = []
    if mirror.proto is not None:
        message = messages.get(mirror.proto)
        if message is None:
            problems.append(
                f"{name}: SDK model at {model.where} mirrors proto message {mirror.proto}, "
                "which no longer exists (update MIRRORS in codegen/sdk_models.py)"
            )
        else:
            contracts.append((f"message {mirror.proto.rsplit('.', 1)[-1]}", message))
    if mirror.openapi is not None:
        file, schema_name = mirror.openapi
        schema = _openapi_schema(documents, file, schema_name)
        if schema is None:
            problems.append(
                f"{name}: SDK model at {model.where} mirrors schema {schema_name} of "
                f"openapi/{file}, which no longer exists (update MIRRORS in "
                "codegen/sdk_models.py)"
            )
        else:
            contracts.append((f"schema {schema_name}", schema))
    return problems, contracts


def _compare(name: str, model: _Fields, mirror: Mirror, label: str, contract: _Fields) -> list[str]:
    """Fields on one side only, and fields of another type than the contract's."""
    problems: list[str] = []
    for field_name, where in contract.fields.items():
        if field_name not in model.fields and field_name not in mirror.contract_only:
            problems.append(
                f"{name}.{field_name}: defined at {where} but missing from the SDK "
                f"model {name} at {model.where}"
            )
    for field_name, expected in contract.types.items():
        declared = model.types.get(field_name)
        if declared is not None and declared != expected:
            problems.append(
                f"{name}.{field_name}: {contract.fields[field_name]} needs {expected}, "
                f"but the SDK model declares {declared} at {model.fields[field_name]}"
            )
    for field_name, where in model.fields.items():
        if field_name not in contract.fields and field_name not in mirror.sdk_only:
            problems.append(
                f"{name}.{field_name}: declared in the SDK model at {where} but missing "
                f"from {label} at {contract.where}"
            )
    return problems
