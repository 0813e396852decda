"""A property-based fuzzer for gRPC services, generated from their proto descriptors.

Given a service descriptor (``missive.<svc>.v1.<svc>_pb2.DESCRIPTOR.services_by_name[...]``)
this module builds Hypothesis strategies for every request message from its fields, hostile
by default:

- strings: empty, arbitrary Unicode, control and format characters, very long (at and beyond
  the bounds the field's comment documents — "max 254 bytes", "1 to 4096 characters" — and
  beyond gRPC's 1 MiB message limit), multi-byte units, Redis key and glob syntax;
- emails (fields whose name mentions one): valid, invalid, upper-case and padded (must be
  normalised), with ':' and glob characters, at 254 and 255 bytes;
- integers at their type's bounds, 0, -1 and at the documented bounds ± 1; bools; floats with
  NaN and infinities; bytes;
- enums with their values and unknown ones (open enums);
- repeated, map and nested fields (with a depth limit), one member per oneof;
- google.protobuf.Timestamp / Duration unset, 0, negative, at the extremes of the valid range
  (0001-01-01 .. 9999-12-31) and just beyond, with invalid nanos.

Callers add "valid from known state" requests (existing users, real tokens, real ids) with
``known=``: a function from a method to a strategy of valid requests, which is then drawn as
is and with one field mutated to a hostile value.

:func:`call_rpc` calls any unary or server-streaming method generically and returns
``(status code, reply or None)``; :func:`documented_statuses` reads the statuses an RPC may
return from the ``Errors:`` line of its comment in the ``.proto`` files.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st
from hypothesis.vendor import pretty

from codegen import protos

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto_definitions"

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX, UINT64_MAX = 2**32 - 1, 2**64 - 1
TIMESTAMP_MIN_SECONDS = -62_135_596_800
"""0001-01-01T00:00:00Z, the earliest valid google.protobuf.Timestamp."""
TIMESTAMP_MAX_SECONDS = 253_402_300_799
"""9999-12-31T23:59:59Z, the latest valid google.protobuf.Timestamp."""
DURATION_MAX_SECONDS = 315_576_000_000
GRPC_MAX_MESSAGE = 1 << 20
"""The services' gRPC message limit (1 MiB): longer requests must be RESOURCE_EXHAUSTED."""

ALWAYS_POSSIBLE = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""Statuses any RPC may return whatever its comment says: success, the auth edge's denials,
an unreachable dependency and the transport's size and rate limits."""

Overrides = Mapping[str, st.SearchStrategy[Any]]
"""Field strategies by full field name (``missive.user.v1.GetUserRequest.email``), by
``Message.field`` or by field name (``email``), the most specific winning. A strategy gives
the field's value (a list for repeated fields, a dict for maps); None leaves it unset."""

KnownRequests = Callable[[MethodDescriptor], "st.SearchStrategy[Message] | None"]
"""Valid requests from known state for a method (None: none for this method)."""


# --------------------------------------------------------------------------------------------
# documentation read from the .proto files (comments need protoc --include_source_info)


@dataclass(frozen=True)
class Bounds:
    """Bounds a field's comment documents: lengths for strings, values for integers."""

    min_length: int | None = None
    max_length: int | None = None
    minimum: int | None = None
    maximum: int | None = None


_RANGE = re.compile(r"(\d+) to (\d+) (?:characters|bytes|decimal digits)")
_MAX_LENGTH = re.compile(r"\bmax(?:imum)? (\d+) (?:characters|bytes)")
_MAXIMUM = re.compile(r"\bthe maximum is (\d+)")
_AT_LEAST = re.compile(r"\bat least (-?\d+)(?=[.,;)]|\s*$)")  # "24 hours" is no bound


def parse_bounds(comment: str) -> Bounds:
    text = " ".join(comment.split())
    min_length = max_length = minimum = maximum = None
    if found := _RANGE.search(text):
        min_length, max_length = int(found[1]), int(found[2])
    elif found := _MAX_LENGTH.search(text):
        max_length = int(found[1])
    if found := _MAXIMUM.search(text):
        maximum = int(found[1])
    if found := _AT_LEAST.search(text):
        minimum = int(found[1])
    return Bounds(min_length, max_length, minimum, maximum)


def parse_errors(comment: str) -> frozenset[grpc.StatusCode] | None:
    """The statuses named on the comment's `Errors:` line (None when it has none).

    The line runs to the next `Label:` line (`Auth:`); explanations in parentheses are
    skipped; any other upper-case word must be a gRPC status name (ValueError otherwise, so a
    typo in a contract is caught)."""
    found = re.search(r"\bErrors:(.*?)(?:\n\s*[A-Z][a-z]+:|\Z)", comment, re.DOTALL)
    if found is None:
        return None
    depth, kept = 0, []
    for char in found[1]:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            kept.append(char)
    names = re.findall(r"\b[A-Z][A-Z_]+\b", "".join(kept))
    unknown = [name for name in names if name not in grpc.StatusCode.__members__]
    if unknown:
        raise ValueError(f"unknown status names on the Errors: line: {', '.join(unknown)}")
    return frozenset(grpc.StatusCode[name] for name in names)


class ProtoDocs:
    """Comments of every message, field, service and RPC under a proto root, by full name."""

    def __init__(self, proto_root: Path = PROTO_ROOT) -> None:
        with tempfile.TemporaryDirectory(prefix="grpc-fuzz-") as scratch:
            files = protos.load_descriptors(
                proto_root, protos.find_protos(proto_root), Path(scratch)
            )
        self.comments: dict[str, str] = {}
        for file in files.file:
            comments = {
                tuple(loc.path): loc.leading_comments + loc.trailing_comments
                for loc in file.source_code_info.location
            }
            prefix = f"{file.package}." if file.package else ""
            for i, message in enumerate(file.message_type):
                self._message(message, prefix, (4, i), comments)
            for i, service in enumerate(file.service):
                name = prefix + service.name
                self.comments[name] = comments.get((6, i), "")
                for j, method in enumerate(service.method):
                    self.comments[f"{name}.{method.name}"] = comments.get((6, i, 2, j), "")

    def _message(
        self,
        message: descriptor_pb2.DescriptorProto,
        scope: str,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> None:
        name = scope + message.name
        self.comments[name] = comments.get(path, "")
        for k, item in enumerate(message.field):
            self.comments[f"{name}.{item.name}"] = comments.get((*path, 2, k), "")
        for k, nested in enumerate(message.nested_type):
            self._message(nested, name + ".", (*path, 3, k), comments)

    def comment(self, full_name: str) -> str:
        return self.comments.get(full_name, "")


@functools.cache
def proto_docs(proto_root: Path = PROTO_ROOT) -> ProtoDocs:
    """The comments under ``proto_root``, compiled once per process."""
    return ProtoDocs(proto_root)


def field_bounds(item: FieldDescriptor, docs: ProtoDocs | None = None) -> Bounds:
    docs = docs or (proto_docs() if PROTO_ROOT.is_dir() else None)
    return parse_bounds(docs.comment(item.full_name)) if docs else Bounds()


def documented_statuses(
    method: MethodDescriptor, docs: ProtoDocs | None = None
) -> frozenset[grpc.StatusCode]:
    """The statuses the RPC's `Errors:` line documents, plus :data:`ALWAYS_POSSIBLE`."""
    docs = docs or proto_docs()
    comment = docs.comment(method.full_name)
    errors = parse_errors(comment)
    if errors is None:
        raise ValueError(f"{method.full_name} has no `Errors:` line in its comment")
    return ALWAYS_POSSIBLE | errors


# --------------------------------------------------------------------------------------------
# value strategies


class LongText(str):
    """``unit * count``, shown as such in Hypothesis reports instead of in full."""

    unit: str
    times: int

    def __new__(cls, unit: str, count: int) -> LongText:
        text = super().__new__(cls, unit * count)
        text.unit, text.times = unit, count
        return text

    def __repr__(self) -> str:
        return f"{self.unit!r} * {self.times}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class LongBytes(bytes):
    """``unit * count`` bytes, shown as such in Hypothesis reports."""

    unit: bytes
    times: int

    def __new__(cls, unit: bytes, count: int) -> LongBytes:
        data = super().__new__(cls, unit * count)
        data.unit, data.times = unit, count
        return data

    def __repr__(self) -> str:
        return f"{self.unit!r} * {self.times}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class LongList(list[Any]):
    """``[item] * count``, shown as such in Hypothesis reports."""

    def __init__(self, item: Any, count: int) -> None:
        super().__init__([item] * count)
        self.item, self.times = item, count

    def __repr__(self) -> str:
        return f"[{self.item!r}] * {self.times}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


_LENGTHS = (64, 65, 100, 101, 128, 129, 255, 256, 1024, 4097, 65_537)
_UNITS = ("a", "é", "😀", "\x00", " ", "\u202e")
_STRINGS = (
    "0",
    "-1",
    "1e3",
    "null",
    "None",
    "true",
    "*",
    "?",
    "[a-z]",
    "\\",
    "user:*",
    "message:1",
    "{tag}",
    "%s%n",
    "../../etc/passwd",
    "' OR '1'='1",
    "<script>",
    "a.b.c",
    "eyJhbGciOiJub25lIn0.e30.",
    "\ufeff",
    "\u200b",
    "\uff21",  # fullwidth A
    "\uff11",  # fullwidth 1
)
_EMAILS = (
    "",
    " ",
    "a",
    "@",
    "a@",
    "@example.com",
    "a@b",
    "a@@example.com",
    "a@b@example.com",
    "a b@example.com",
    "alice@example.com",
    "Alice@Example.COM",
    "  alice@example.com  ",
    "\talice@example.com\n",
    "a:b@example.com",
    "alice@example.com:conversations",
    "*@example.com",
    "a*@example.com",
    "a?@example.com",
    "[a]@example.com",
    "a\\b@example.com",
    "{a}@example.com",
    '"a"@example.com',
    "a\x00@example.com",
    "a\n@example.com",
    "a@exa*mple.com",
    "a@example.com.",
    "a..b@example.com",
    ".a@example.com",
    "a@localhost",
    "a@[127.0.0.1]",
    "ünïcödé@example.com",
    "a@bücher.example",
    "user",
    "users",
    "*",
)
_EMAIL_CHARS = ":*?[]\\{}\"' \t\n\x00@.%+"


def email_of_length(length: int) -> str:
    """A syntactically valid-looking address of exactly ``length`` bytes (length >= 12)."""
    local, tld = "u", ".com"
    room = length - len(local) - 1 - len(tld)
    labels = []
    while room > 0:
        size = min(63, room)
        if room - size == 1:  # never leave a lone dot
            size -= 1
        labels.append("d" * size)
        room -= size + 1
    domain = ".".join(labels)
    address = f"{local}@{domain}{tld}"
    return address + "x" * (length - len(address))


def _insert(address: str, char: str, at: int) -> str:
    at %= len(address) + 1
    return address[:at] + char + address[at:]


def email_strategy() -> st.SearchStrategy[str]:
    """Valid, invalid and hostile addresses."""
    valid = st.emails()
    return st.one_of(
        valid,
        st.sampled_from(_EMAILS),
        st.builds(_insert, valid, st.sampled_from(_EMAIL_CHARS), st.integers(0, 64)),
        valid.map(lambda address: f"  {address.upper()} "),
        st.builds(email_of_length, st.sampled_from([253, 254, 255, 256, 1000])),
    )


def _boundary_lengths(bounds: Bounds) -> list[int]:
    """Each documented length bound, one below and one above it."""
    lengths = set()
    for bound in (bounds.min_length, bounds.max_length):
        if bound is not None:
            lengths |= {n for n in (bound - 1, bound, bound + 1) if n >= 0}
    return sorted(lengths)


def string_strategy(bounds: Bounds = Bounds()) -> st.SearchStrategy[str]:
    """Hostile strings, with lengths at and around the documented bounds."""
    lengths = sorted(set(_LENGTHS) | {GRPC_MAX_MESSAGE + 1})
    options = [
        st.just(""),
        st.text(st.characters(codec="utf-8"), max_size=24),
        st.text(st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"]), min_size=1, max_size=6),
        st.builds(LongText, st.sampled_from(_UNITS), st.sampled_from(lengths)),
        st.sampled_from(_STRINGS),
    ]
    if boundary := _boundary_lengths(bounds):
        options.append(st.builds(LongText, st.sampled_from(_UNITS), st.sampled_from(boundary)))
    return st.one_of(options)


def id_string_strategy(bounds: Bounds = Bounds()) -> st.SearchStrategy[str]:
    """For string ids and keys: digits, near-digits and key-safe characters."""
    options = [
        st.from_regex(r"[0-9]{1,25}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True),
        st.sampled_from(["0", "00", "01", "-1", "+1", " 1", "1 ", "1.0", "9" * 19, "9" * 20]),
        string_strategy(bounds),
    ]
    if boundary := _boundary_lengths(bounds):  # valid characters, length on the edge
        options.append(st.builds(LongText, st.sampled_from(["9", "a"]), st.sampled_from(boundary)))
    return st.one_of(options)


def token_strategy() -> st.SearchStrategy[str]:
    """For opaque tokens (page tokens): base64-looking junk and hostile strings."""
    return st.one_of(
        st.from_regex(r"[A-Za-z0-9_=-]{1,80}", fullmatch=True),
        st.sampled_from(["e30", "eyJ9", "bnVsbA", "W10", "eyJhIjoxfQ", "=", "%%%"]),
        string_strategy(),
    )


def integer_strategy(low: int, high: int, bounds: Bounds = Bounds()) -> st.SearchStrategy[int]:
    """Integers in [low, high], often at the type's or the documented bounds."""
    special = {0, 1, -1, 2, 50, 100, 101, low, low + 1, high, high - 1}
    for bound in (bounds.minimum, bounds.maximum):
        if bound is not None:
            special |= {bound - 1, bound, bound + 1}
    return st.one_of(
        st.sampled_from(sorted(v for v in special if low <= v <= high)),
        st.integers(max(low, -1000), min(high, 1000)),
        st.integers(low, high),
    )


def timestamp_strategy() -> st.SearchStrategy[Timestamp | None]:
    """Unset (None), 0, negative, the extremes of the valid range and beyond, bad nanos."""
    seconds = st.sampled_from(
        [
            0,
            -1,
            1,
            1_700_000_000,
            TIMESTAMP_MIN_SECONDS,
            TIMESTAMP_MAX_SECONDS,
            TIMESTAMP_MIN_SECONDS - 1,
            TIMESTAMP_MAX_SECONDS + 1,
            INT64_MIN,
            INT64_MAX,
        ]
    )
    nanos = st.sampled_from([0, 1, 999_999_999, 1_000_000_000, -1, INT32_MAX, INT32_MIN])
    return st.one_of(
        st.none(),
        st.builds(Timestamp, seconds=seconds, nanos=nanos),
        st.builds(
            Timestamp,
            seconds=st.integers(TIMESTAMP_MIN_SECONDS, TIMESTAMP_MAX_SECONDS),
            nanos=st.integers(0, 999_999_999),
        ),
    )


def duration_strategy() -> st.SearchStrategy[Duration | None]:
    bound = DURATION_MAX_SECONDS
    return st.one_of(
        st.none(),
        st.builds(
            Duration,
            seconds=st.sampled_from([0, 1, -1, bound, -bound, bound + 1, INT64_MAX, INT64_MIN]),
            nanos=st.sampled_from([0, 999_999_999, -999_999_999, 1_000_000_000]),
        ),
        st.builds(Duration, seconds=st.integers(-bound, bound), nanos=st.integers(0, 999_999_999)),
    )


def enum_strategy(enum: EnumDescriptor) -> st.SearchStrategy[int]:
    """Every declared value, and unknown numbers when the enum is open (proto3)."""
    known = sorted({value.number for value in enum.values})
    declared = st.sampled_from(known)
    if enum.is_closed:
        return declared
    unknown = sorted({-1, max(known) + 1, max(known) + 1000, INT32_MAX, INT32_MIN} - set(known))
    return st.one_of(
        declared,
        st.sampled_from(unknown),
        st.integers(INT32_MIN, INT32_MAX).filter(lambda n: n not in known),
    )


_INTEGERS: dict[int, tuple[int, int]] = {
    FieldDescriptor.TYPE_INT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SINT32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_SFIXED32: (INT32_MIN, INT32_MAX),
    FieldDescriptor.TYPE_INT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SINT64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_SFIXED64: (INT64_MIN, INT64_MAX),
    FieldDescriptor.TYPE_UINT32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_FIXED32: (0, UINT32_MAX),
    FieldDescriptor.TYPE_UINT64: (0, UINT64_MAX),
    FieldDescriptor.TYPE_FIXED64: (0, UINT64_MAX),
}


def _small(value: Any) -> bool:
    """Whether ``value`` is small enough to repeat a thousand times."""
    if isinstance(value, str | bytes):
        return len(value) <= 256
    if isinstance(value, Message):
        return value.ByteSize() <= 1024
    return True


def _is_map(item: FieldDescriptor) -> bool:
    return item.message_type is not None and item.message_type.GetOptions().map_entry


@dataclass(frozen=True)
class _Builder:
    overrides: Overrides = field(default_factory=dict)
    max_depth: int = 3
    docs: ProtoDocs | None = None

    def override(self, item: FieldDescriptor) -> st.SearchStrategy[Any] | None:
        owner = item.containing_type.name if item.containing_type is not None else ""
        short = f"{owner}.{item.name}"
        for key in (item.full_name, short, item.name):
            if key in self.overrides:
                return self.overrides[key]
        return None

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        cls = message_factory.GetMessageClass(descriptor)
        optional = {}
        for item in descriptor.fields:
            value = self.field(item, depth)
            if value is not None:
                optional[item.name] = value
        return st.fixed_dictionaries({}, optional=optional).map(
            functools.partial(_construct, cls, descriptor)
        )

    def field(self, item: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        overridden = self.override(item)
        if overridden is not None:
            return overridden
        if _is_map(item):
            assert item.message_type is not None
            key_field = item.message_type.fields_by_name["key"]
            value_field = item.message_type.fields_by_name["value"]
            keys, values = self.single(key_field, depth), self.single(value_field, depth)
            if keys is None or values is None:
                return None
            return st.dictionaries(keys, values, max_size=4)
        single = self.single(item, depth)
        if single is None or not item.is_repeated:
            return single
        return st.one_of(
            st.lists(single, max_size=4),
            st.builds(LongList, single.filter(_small), st.sampled_from([101, 1000])),
        )

    def single(self, item: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        """One value of the field (an element, for repeated fields); None: leave it unset."""
        kind = item.type
        if kind == FieldDescriptor.TYPE_MESSAGE:
            return self._submessage(item, depth)
        if kind == FieldDescriptor.TYPE_STRING:
            return _string_field(item.name.lower(), field_bounds(item, self.docs))
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.one_of(
                st.binary(max_size=32),
                st.builds(LongBytes, st.just(b"\xff"), st.sampled_from([1024, 65_537])),
            )
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            special = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45, 3.4e38, -3.4e38]
            floats = st.floats(width=32) if kind == FieldDescriptor.TYPE_FLOAT else st.floats()
            return st.one_of(st.sampled_from(special), floats)
        if kind == FieldDescriptor.TYPE_ENUM:
            assert item.enum_type is not None
            return enum_strategy(item.enum_type)
        if kind in _INTEGERS:
            low, high = _INTEGERS[kind]
            return integer_strategy(low, high, field_bounds(item, self.docs))
        raise TypeError(f"{item.full_name}: unsupported field type {kind}")

    def _submessage(self, item: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
        assert item.message_type is not None
        full = item.message_type.full_name
        if full == "google.protobuf.Timestamp":
            return timestamp_strategy()
        if full == "google.protobuf.Duration":
            return duration_strategy()
        if depth >= self.max_depth:
            return None
        return self.message(item.message_type, depth + 1)


def _string_field(name: str, bounds: Bounds) -> st.SearchStrategy[Any]:
    """Strings for a field called ``name`` (lower case): emails, ids and tokens where the name
    says so, with their ``bounds`` from the contract docs."""
    if "email" in name:
        return st.one_of(email_strategy(), email_strategy(), string_strategy(bounds))
    if name == "id" or name.endswith("_id"):
        return id_string_strategy(bounds)
    if "token" in name:
        return token_strategy()
    return string_strategy(bounds)


def _merge(target: Message, value: Message) -> None:
    """Copy ``value`` into ``target``, even when their classes come from different pools
    (a Timestamp built here into a message of a dynamically loaded contract)."""
    if type(value) is type(target):
        target.CopyFrom(value)
    else:
        target.Clear()
        target.MergeFromString(value.SerializeToString())


def _assign(message: Message, item: FieldDescriptor, value: Any) -> None:
    """Set one field of ``message`` to ``value`` (None leaves it unset)."""
    if value is None:
        return
    target = getattr(message, item.name)
    if _is_map(item):
        _assign_map(target, item, value)
    elif item.is_repeated and item.message_type is not None:
        for entry in value:
            if entry is not None:
                _merge(target.add(), entry)
    elif item.is_repeated:
        target.extend(value)
    elif item.message_type is not None:
        _merge(target, value)
    else:
        setattr(message, item.name, value)


def _assign_map(target: Any, item: FieldDescriptor, value: dict[Any, Any]) -> None:
    assert item.message_type is not None
    if item.message_type.fields_by_name["value"].message_type is None:
        target.update(value)
        return
    for key, entry in value.items():
        if entry is not None:
            _merge(target[key], entry)


def _construct(cls: type[Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    for oneof in descriptor.oneofs:
        members = [f.name for f in oneof.fields if values.get(f.name) is not None]
        for extra in members[1:]:  # one member per oneof: setting another clears the first
            del values[extra]
    message = cls()
    for name, value in values.items():
        _assign(message, descriptor.fields_by_name[name], value)
    return message


def message_strategy(
    descriptor: Descriptor,
    overrides: Overrides | None = None,
    *,
    max_depth: int = 3,
    docs: ProtoDocs | None = None,
) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor``'s class with any subset of hostile field values."""
    return _Builder(overrides or {}, max_depth, docs).message(descriptor)


def complete_message(
    descriptor: Descriptor, values: Overrides, *, max_depth: int = 3
) -> st.SearchStrategy[Message]:
    """Messages with *every* field ``values`` has an entry for set from it (keys as in
    :data:`Overrides`; a None draw leaves the field unset). A message field without an entry
    is completed the same way, recursively; other fields stay unset. This is how callers build
    valid requests from known state: ``values`` holds real emails, ids and tokens."""
    builder = _Builder(values, max_depth)

    def build(message: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        fields: dict[str, st.SearchStrategy[Any]] = {}
        for item in message.fields:
            given = builder.override(item)
            if given is not None:
                fields[item.name] = given
            elif (
                item.message_type is not None
                and not item.is_repeated
                and depth < max_depth
                and not item.message_type.full_name.startswith("google.protobuf.")
            ):
                fields[item.name] = build(item.message_type, depth + 1)
        cls = message_factory.GetMessageClass(message)
        return st.fixed_dictionaries(fields).map(functools.partial(_construct, cls, message))

    return build(descriptor, 0)


def field_strategy(
    item: FieldDescriptor, *, max_depth: int = 3, docs: ProtoDocs | None = None
) -> st.SearchStrategy[Any] | None:
    """The hostile values :func:`message_strategy` draws for one field (None: none)."""
    return _Builder({}, max_depth, docs).field(item, 0)


@st.composite
def _mutated(
    draw: st.DrawFn, valid: st.SearchStrategy[Message], descriptor: Descriptor, max_depth: int
) -> Message:
    request = draw(valid)
    if not descriptor.fields:
        return request
    item = draw(st.sampled_from(list(descriptor.fields)))
    mutated = type(request)()
    mutated.CopyFrom(request)
    mutated.ClearField(item.name)
    hostile = field_strategy(item, max_depth=max_depth)
    if hostile is not None:
        _assign(mutated, item, draw(st.one_of(st.none(), hostile)))
    return mutated


def mutate_one_field(
    valid: st.SearchStrategy[Message], descriptor: Descriptor, *, max_depth: int = 3
) -> st.SearchStrategy[Message]:
    """Valid requests with one field cleared or replaced by a hostile value."""
    return _mutated(valid, descriptor, max_depth)


def request_strategy(
    method: MethodDescriptor,
    overrides: Overrides | None = None,
    *,
    known: KnownRequests | None = None,
    max_depth: int = 3,
    docs: ProtoDocs | None = None,
) -> st.SearchStrategy[Message]:
    """Requests for ``method``: hostile ones built from its fields and, when ``known`` gives
    valid requests for it, those as they are and with one field mutated."""
    parts = [message_strategy(method.input_type, overrides, max_depth=max_depth, docs=docs)]
    valid = known(method) if known is not None else None
    if valid is not None:
        parts += [valid, mutate_one_field(valid, method.input_type, max_depth=max_depth)]
    return st.one_of(parts)


M = TypeVar("M", bound=Message)


def _expect(cls: type[M], message: Message) -> M:
    assert isinstance(message, cls), f"expected {cls.__name__}, drew {type(message).__name__}"
    return message


def typed(strategy: st.SearchStrategy[Message], cls: type[M]) -> st.SearchStrategy[M]:
    """The same strategy, typed for mypy as drawing ``cls`` messages (checked when drawn)."""
    return strategy.map(functools.partial(_expect, cls))


def rpc_methods(service: ServiceDescriptor) -> list[MethodDescriptor]:
    """The service's methods in declaration order."""
    return list(service.methods)


def method_path(method: MethodDescriptor) -> str:
    """The HTTP/2 path gRPC calls it by: ``/package.Service/Method``."""
    return f"/{method.containing_service.full_name}/{method.name}"


# --------------------------------------------------------------------------------------------
# compact reports

_SHOWN = 60


def _compact_value(value: Any) -> str:
    if isinstance(value, Message):
        return compact_repr(value)
    if isinstance(value, str | bytes):
        if len(value) <= _SHOWN:
            return repr(value)
        if value == value[:1] * len(value):
            return f"{value[:1]!r} * {len(value)}"
        return f"{value[:_SHOWN]!r}...({len(value)} long)"
    if isinstance(value, Mapping):
        items = list(value.items())
        shown = ", ".join(f"{_compact_value(k)}: {_compact_value(v)}" for k, v in items[:5])
        return "{" + shown + (f", ...({len(items)} entries)" if len(items) > 5 else "") + "}"
    if isinstance(value, Sequence):
        items = list(value)
        if len(items) > 5 and all(item == items[0] for item in items):
            return f"[{_compact_value(items[0])}] * {len(items)}"
        shown = ", ".join(_compact_value(item) for item in items[:5])
        return "[" + shown + (f", ...({len(items)} items)" if len(items) > 5 else "") + "]"
    return repr(value)


def compact_repr(message: Message) -> str:
    """``Type(field=value, ...)`` with long strings, bytes and lists abbreviated (as
    ``'a' * 4097`` when the value is one repeated unit, which keeps it reproducible)."""
    fields = ", ".join(
        f"{item.name}={_compact_value(value)}" for item, value in message.ListFields()
    )
    return f"{type(message).__name__}({fields})"


def _pretty_message(message: Message, printer: Any, cycle: bool) -> None:
    printer.text(compact_repr(message))


# Hypothesis prints falsifying examples with its pretty printer: show messages compactly
# rather than as text format, which holds every byte of a 1 MiB field.
pretty.for_type_by_name("google.protobuf.message", "Message", _pretty_message)


# --------------------------------------------------------------------------------------------
# metadata


def metadata_strategy(
    tokens: Sequence[str] = (), service_tokens: Sequence[str] = ()
) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Call metadata: none, malformed or forged credentials, and the given real ones
    (``authorization: Bearer`` user tokens, ``x-missive-service-token`` service tokens)."""
    junk = st.sampled_from(
        [
            "",
            "Bearer",
            "Bearer ",
            "bearer x",
            "Basic dXNlcjpwYXNz",
            "Bearer a.b.c",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhQGIuYyJ9.",
            "Bearer " + "A" * 4000,
        ]
    )
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
    options: list[st.SearchStrategy[tuple[tuple[str, str], ...]]] = [
        st.just(()),
        junk.map(lambda value: (("authorization", value),)),
        printable.map(lambda value: (("authorization", f"Bearer {value}"),)),
        printable.map(lambda value: (("x-missive-service-token", value),)),
    ]
    if tokens:
        real = st.sampled_from(list(tokens))
        options.append(real.map(lambda token: (("authorization", f"Bearer {token}"),)))
        # A user token where a service credential is expected never passes as one.
        options.append(real.map(lambda token: (("x-missive-service-token", token),)))
    if service_tokens:
        options.append(
            st.sampled_from(list(service_tokens)).map(
                lambda token: (("x-missive-service-token", token),)
            )
        )
    return st.one_of(options)


# --------------------------------------------------------------------------------------------
# calling


@dataclass(frozen=True)
class RpcResult:
    code: grpc.StatusCode
    reply: Message | list[Message] | None
    details: str = ""


async def call_rpc_detailed(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,  # noqa: ASYNC109 (the gRPC deadline, passed to the call)
    *,
    max_items: int = 3,
    stream_idle: float = 0.5,
) -> RpcResult:
    """Call a unary or server-streaming method; see :func:`call_rpc`."""
    if method.client_streaming:
        raise TypeError(f"{method.full_name}: client-streaming methods are not supported")
    output = message_factory.GetMessageClass(method.output_type)
    serialize = type(request).SerializeToString
    path = method_path(method)
    if not method.server_streaming:
        unary = channel.unary_unary(
            path, request_serializer=serialize, response_deserializer=output.FromString
        )
        try:
            reply = await unary(request, metadata=tuple(metadata), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return RpcResult(exc.code(), None, exc.details() or "")
        return RpcResult(grpc.StatusCode.OK, reply)

    stream = channel.unary_stream(
        path, request_serializer=serialize, response_deserializer=output.FromString
    )
    call = stream(request, metadata=tuple(metadata), timeout=timeout)
    items: list[Message] = []
    ended = False
    try:
        while len(items) < max_items:
            item = await asyncio.wait_for(call.read(), stream_idle)
            if item is grpc.aio.EOF:
                ended = True
                break
            assert isinstance(item, Message)
            items.append(item)
    except TimeoutError:
        pass  # the stream is open and quiet: that is a healthy subscription
    except grpc.aio.AioRpcError as exc:
        return RpcResult(exc.code(), None, exc.details() or "")
    finally:
        call.cancel()
    if ended:
        code = await call.code()
        if code != grpc.StatusCode.OK:
            return RpcResult(code, None, await call.details() or "")
    return RpcResult(grpc.StatusCode.OK, items)


async def call_rpc(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    request: Message,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,  # noqa: ASYNC109 (the gRPC deadline, passed to the call)
) -> tuple[grpc.StatusCode, Message | list[Message] | None]:
    """Call ``method`` on ``channel`` and return (status code, reply or None).

    A unary call gives its reply; a server-streaming call gives the first few items it sends
    (a list, possibly empty: a stream still open and quiet after a moment counts as OK) and is
    then cancelled. A failed call gives its status and None."""
    result = await call_rpc_detailed(channel, method, request, metadata, timeout)
    return result.code, result.reply
