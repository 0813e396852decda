"""The gRPC fuzzer itself: its strategies build valid messages of the right type, reach the
extremes they promise, honour overrides and known-state hooks; documented statuses are read
for every RPC; call_rpc handles unary and server-streaming calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2
from missive.user.v1 import user_pb2

from tests.contract import grpc_fuzz as fuzz

SERVICES = [
    user_pb2.DESCRIPTOR.services_by_name["UserService"],
    message_pb2.DESCRIPTOR.services_by_name["MessageService"],
    notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
    frontend_pb2.DESCRIPTOR.services_by_name["FrontendService"],
]
METHODS = [method for service in SERVICES for method in fuzz.rpc_methods(service)]

T = TypeVar("T")


class _AllReached(Exception):
    pass


def reached(
    strategy: st.SearchStrategy[T], checks: dict[str, Callable[[T], bool]], examples: int = 3000
) -> None:
    """Fail unless, within ``examples`` draws, every check holds for some drawn value."""
    missing = dict(checks)

    @settings(
        max_examples=examples,
        phases=[Phase.generate],
        database=None,
        derandomize=True,  # the same draws every run: a check either always passes or never
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def draw(value: T) -> None:
        for name, check in list(missing.items()):
            if check(value):
                del missing[name]
        if not missing:
            raise _AllReached

    try:
        draw()
    except _AllReached:
        return
    pytest.fail(f"never drawn in {examples} examples: {', '.join(missing)}")


def occurs(strategy: st.SearchStrategy[T], predicate: Callable[[T], bool]) -> None:
    reached(strategy, {"the example": predicate})


def method(service: str, name: str) -> MethodDescriptor:
    found = {m.full_name: m for m in METHODS}
    return found[f"{service}.{name}"]


SEND = method("missive.message.v1.MessageService", "SendMessage")
GET_MESSAGE = method("missive.message.v1.MessageService", "GetMessage")
LIST_USERS = method("missive.user.v1.UserService", "ListUsers")
CREATE_NOTIFICATION = method("missive.notification.v1.NotificationService", "CreateNotification")
RECEIVE = method("missive.frontend.v1.FrontendService", "ReceiveNotification")
SUBSCRIBE = method("missive.frontend.v1.FrontendService", "SubscribeNotifications")


def test_every_rpc_of_the_four_services_is_found() -> None:
    assert len(METHODS) == sum(len(service.methods) for service in SERVICES) >= 19
    assert fuzz.method_path(SEND) == "/missive.message.v1.MessageService/SendMessage"


@pytest.mark.parametrize(
    "rpc", METHODS, ids=lambda m: m.full_name.rsplit(".", 2)[-2] + "." + m.name
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_requests_are_valid_messages_of_the_input_type(rpc: MethodDescriptor, data: Any) -> None:
    request = data.draw(fuzz.request_strategy(rpc))
    assert type(request) is message_factory.GetMessageClass(rpc.input_type)
    assert request.DESCRIPTOR.full_name == rpc.input_type.full_name
    wire = request.SerializeToString(deterministic=True)
    parsed = type(request).FromString(wire)
    assert parsed.SerializeToString(deterministic=True) == wire


# ---- extremes of the real contracts


def _len(text: str) -> int:
    return len(text.encode())


def test_strings_reach_empty_long_unicode_and_control_characters() -> None:
    requests = fuzz.typed(fuzz.request_strategy(SEND), message_pb2.SendMessageRequest)
    reached(
        requests,
        {
            "empty": lambda r: r.content == "" and r.sender_email != "",
            "documented bound + 1": lambda r: len(r.content) == 4097,
            "beyond gRPC's limit": lambda r: len(r.content) > fuzz.GRPC_MAX_MESSAGE,
            "astral unicode": lambda r: any(ord(c) > 0xFFFF for c in r.content),
            "control characters": lambda r: any(ord(c) < 0x20 for c in r.content),
            "NUL": lambda r: "\x00" in r.content,
            "bidi override": lambda r: "\u202e" in r.content,
            "id bound + 1": lambda r: len(r.client_request_id) == 65,
        },
    )


def test_emails_reach_valid_invalid_and_hostile_addresses() -> None:
    requests = fuzz.typed(fuzz.request_strategy(SEND), message_pb2.SendMessageRequest)
    reached(
        requests,
        {
            "valid": lambda r: r.sender_email.count("@") == 1 and "." in r.sender_email,
            "no @": lambda r: "@" not in r.receiver_email and r.receiver_email != "",
            "colon": lambda r: ":" in r.sender_email and "@" in r.sender_email,
            "star": lambda r: "*" in r.receiver_email and "@" in r.receiver_email,
            "question mark": lambda r: "?" in r.receiver_email and "@" in r.receiver_email,
            "bracket": lambda r: "[" in r.receiver_email and "@" in r.receiver_email,
            "backslash": lambda r: "\\" in r.receiver_email and "@" in r.receiver_email,
            "not normalised": lambda r: r.sender_email not in ("", r.sender_email.strip().lower()),
            "254 bytes": lambda r: _len(r.sender_email) == 254 and "@" in r.sender_email,
            "255 bytes": lambda r: _len(r.sender_email) == 255 and "@" in r.sender_email,
        },
    )


def test_integers_reach_their_bounds() -> None:
    ids = fuzz.typed(fuzz.request_strategy(GET_MESSAGE), message_pb2.GetMessageRequest)
    reached(
        ids.map(lambda r: r.id),
        {
            "int64 max": lambda v: v == fuzz.INT64_MAX,
            "int64 min": lambda v: v == fuzz.INT64_MIN,
            "zero": lambda v: v == 0,
            "documented minimum": lambda v: v == 1,
            "small negative": lambda v: -1000 < v < 0,
        },
    )
    sizes = fuzz.typed(fuzz.request_strategy(LIST_USERS), user_pb2.ListUsersRequest)
    reached(
        sizes.map(lambda r: r.page_size),
        {
            "int32 max": lambda v: v == fuzz.INT32_MAX,
            "int32 min": lambda v: v == fuzz.INT32_MIN,
            "documented maximum": lambda v: v == 100,
            "documented maximum + 1": lambda v: v == 101,
            "-1": lambda v: v == -1,
        },
    )


def test_timestamps_reach_unset_zero_extremes_and_invalid() -> None:
    requests = fuzz.typed(
        fuzz.request_strategy(CREATE_NOTIFICATION), notification_pb2.CreateNotificationRequest
    )
    reached(
        requests,
        {
            "unset": lambda r: not r.HasField("timestamp") and r.message_id != 0,
            "zero": lambda r: r.HasField("timestamp") and r.timestamp.seconds == 0,
            "9999-12-31": lambda r: r.timestamp.seconds == fuzz.TIMESTAMP_MAX_SECONDS,
            "0001-01-01": lambda r: r.timestamp.seconds == fuzz.TIMESTAMP_MIN_SECONDS,
            "negative": lambda r: r.timestamp.seconds < 0,
            "beyond 9999": lambda r: r.timestamp.seconds > fuzz.TIMESTAMP_MAX_SECONDS,
            "invalid nanos": lambda r: not 0 <= r.timestamp.nanos <= 999_999_999,
            "read": lambda r: r.read,
            "unread": lambda r: not r.read and r.HasField("timestamp"),
        },
    )


def test_nested_messages_are_set_unset_and_fuzzed() -> None:
    requests = fuzz.typed(fuzz.request_strategy(RECEIVE), frontend_pb2.ReceiveNotificationRequest)
    reached(
        requests,
        {
            "unset": lambda r: not r.HasField("notification"),
            "nested int64 max": lambda r: r.notification.message_id == fuzz.INT64_MAX,
            "nested hostile email": lambda r: ":" in r.notification.receiver_email,
            "nested timestamp": lambda r: r.notification.HasField("timestamp"),
        },
    )


def test_documented_bounds_are_read_from_field_comments() -> None:
    fields = message_pb2.SendMessageRequest.DESCRIPTOR.fields_by_name
    assert fuzz.field_bounds(fields["content"]) == fuzz.Bounds(min_length=1, max_length=4096)
    assert fuzz.field_bounds(fields["sender_email"]) == fuzz.Bounds(max_length=254)
    # "remembered for at least 24 hours" is not a bound on the value
    assert fuzz.field_bounds(fields["client_request_id"]) == fuzz.Bounds(1, 64)
    get = message_pb2.GetMessageRequest.DESCRIPTOR.fields_by_name
    assert fuzz.field_bounds(get["id"]) == fuzz.Bounds(minimum=1)
    page = user_pb2.ListUsersRequest.DESCRIPTOR.fields_by_name
    assert fuzz.field_bounds(page["page_size"]).maximum == 100
    ids = notification_pb2.MarkNotificationReadRequest.DESCRIPTOR.fields_by_name
    assert fuzz.field_bounds(ids["id"]) == fuzz.Bounds(1, 19)


def test_email_of_length_is_exact() -> None:
    for length in (12, 64, 253, 254, 255, 1000):
        address = fuzz.email_of_length(length)
        assert len(address.encode()) == length and address.count("@") == 1
        assert ".." not in address


# ---- a synthetic contract for what the four services do not use


def _synthetic_tree() -> Descriptor:
    """fuzz.test.v1.Tree, built with descriptor_pb2 in a private pool (no protoc needed)::

    syntax = "proto3";
    package fuzz.test.v1;
    import "google/protobuf/timestamp.proto";
    enum Color { COLOR_UNSPECIFIED = 0; COLOR_RED = 1; COLOR_BLUE = 2; }
    message Tree {
      string label = 1;
      repeated Tree children = 2;
      repeated int64 weights = 3;
      map<string, int32> counts = 4;
      map<string, Tree> named = 5;
      Color color = 6;
      repeated Color palette = 7;
      oneof choice { string text = 8; uint64 number = 9; bytes blob = 10; }
      double ratio = 11;
      float small = 12;
      sint32 delta = 13;
      fixed64 big = 14;
      bool flag = 15;
      google.protobuf.Timestamp at = 16;
      optional string note = 17;
    }
    """
    file = descriptor_pb2.FileDescriptorProto(
        name="fuzz/test/v1/tree.proto",
        package="fuzz.test.v1",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    file.enum_type.add(name="Color").value.extend(
        descriptor_pb2.EnumValueDescriptorProto(name=name, number=number)
        for number, name in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE"])
    )
    tree = file.message_type.add(name="Tree")
    tree.oneof_decl.add(name="choice")
    tree.oneof_decl.add(name="_note")
    fd = descriptor_pb2.FieldDescriptorProto
    repeated, optional = fd.LABEL_REPEATED, fd.LABEL_OPTIONAL

    def add(name: str, number: int, kind: int, label: int = optional, **extra: Any) -> None:
        tree.field.add(name=name, number=number, type=kind, label=label, **extra)

    for entry, value_kind, value_type in (
        ("CountsEntry", fd.TYPE_INT32, ""),
        ("NamedEntry", fd.TYPE_MESSAGE, ".fuzz.test.v1.Tree"),
    ):
        nested = tree.nested_type.add(name=entry)
        nested.options.map_entry = True
        nested.field.add(name="key", number=1, type=fd.TYPE_STRING, label=optional)
        value = nested.field.add(name="value", number=2, type=value_kind, label=optional)
        if value_type:
            value.type_name = value_type
    add("label", 1, fd.TYPE_STRING)
    add("children", 2, fd.TYPE_MESSAGE, repeated, type_name=".fuzz.test.v1.Tree")
    add("weights", 3, fd.TYPE_INT64, repeated)
    add("counts", 4, fd.TYPE_MESSAGE, repeated, type_name=".fuzz.test.v1.Tree.CountsEntry")
    add("named", 5, fd.TYPE_MESSAGE, repeated, type_name=".fuzz.test.v1.Tree.NamedEntry")
    add("color", 6, fd.TYPE_ENUM, type_name=".fuzz.test.v1.Color")
    add("palette", 7, fd.TYPE_ENUM, repeated, type_name=".fuzz.test.v1.Color")
    add("text", 8, fd.TYPE_STRING, oneof_index=0)
    add("number", 9, fd.TYPE_UINT64, oneof_index=0)
    add("blob", 10, fd.TYPE_BYTES, oneof_index=0)
    add("ratio", 11, fd.TYPE_DOUBLE)
    add("small", 12, fd.TYPE_FLOAT)
    add("delta", 13, fd.TYPE_SINT32)
    add("big", 14, fd.TYPE_FIXED64)
    add("flag", 15, fd.TYPE_BOOL)
    add("at", 16, fd.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    add("note", 17, fd.TYPE_STRING, oneof_index=1, proto3_optional=True)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(file.SerializeToString())
    return pool.FindMessageTypeByName("fuzz.test.v1.Tree")


TREE = _synthetic_tree()
TREES: st.SearchStrategy[Any] = fuzz.message_strategy(TREE, max_depth=2)
SHALLOW_TREES: st.SearchStrategy[Any] = fuzz.message_strategy(TREE, max_depth=1)


def _depth(tree: Any) -> int:
    nested = [*tree.children, *tree.named.values()]
    return 1 + max((_depth(child) for child in nested), default=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES)
def test_synthetic_messages_are_valid_with_one_oneof_member_and_bounded_depth(tree: Any) -> None:
    assert type(tree) is message_factory.GetMessageClass(TREE)
    assert tree.WhichOneof("choice") in (None, "text", "number", "blob")
    assert _depth(tree) <= 3
    wire = tree.SerializeToString(deterministic=True)
    assert type(tree).FromString(wire).SerializeToString(deterministic=True) == wire


def test_enums_reach_declared_and_unknown_values() -> None:
    reached(
        SHALLOW_TREES,
        {
            "0": lambda t: t.HasField("note") and t.color == 0,
            "1": lambda t: t.color == 1,
            "2": lambda t: t.color == 2,
            "unknown": lambda t: t.color not in (0, 1, 2),
            "unknown in a repeated enum": lambda t: any(c not in (0, 1, 2) for c in t.palette),
        },
    )


def test_repeated_map_oneof_and_other_scalars_are_exercised() -> None:
    reached(
        SHALLOW_TREES,
        {
            "long repeated": lambda t: len(t.weights) > 100,
            "int64 min in a list": lambda t: fuzz.INT64_MIN in t.weights,
            "repeated messages": lambda t: len(t.children) >= 2,
            "map of scalars": lambda t: fuzz.INT32_MAX in t.counts.values(),
            "map of messages": lambda t: any(child.label for child in t.named.values()),
            "oneof uint64": lambda t: (
                t.WhichOneof("choice") == "number" and t.number == fuzz.UINT64_MAX
            ),
            "oneof bytes": lambda t: t.WhichOneof("choice") == "blob",
            "NaN": lambda t: t.ratio != t.ratio,
            "fixed64 max": lambda t: t.big == fuzz.UINT64_MAX,
            "sint32 min": lambda t: t.delta == fuzz.INT32_MIN,
            "proto3 optional set to its default": lambda t: t.HasField("note") and t.note == "",
            "timestamp in another pool": lambda t: t.at.seconds == fuzz.TIMESTAMP_MAX_SECONDS,
        },
    )


# ---- overrides and known state


def test_overrides_replace_field_strategies_most_specific_first() -> None:
    overrides = {
        "email": st.just("generic@example.com"),
        "SendMessageRequest.sender_email": st.just("short@example.com"),
        "missive.message.v1.SendMessageRequest.receiver_email": st.just("full@example.com"),
        "content": st.none(),
    }
    requests = fuzz.typed(fuzz.request_strategy(SEND, overrides), message_pb2.SendMessageRequest)

    @settings(max_examples=50, deadline=None)
    @given(requests)
    def only_overridden_values(request: message_pb2.SendMessageRequest) -> None:
        assert request.sender_email in ("", "short@example.com")
        assert request.receiver_email in ("", "full@example.com")
        assert request.content == ""  # None leaves the field unset

    only_overridden_values()
    reached(
        requests,
        {
            "set": lambda r: r.sender_email != "" and r.receiver_email != "",
            "left unset": lambda r: r.sender_email == "",
        },
    )
    email_only = fuzz.typed(
        fuzz.request_strategy(SUBSCRIBE, overrides), frontend_pb2.SubscribeNotificationsRequest
    )
    occurs(email_only, lambda r: r.email == "generic@example.com")


def test_known_requests_are_drawn_as_they_are_and_with_one_field_mutated() -> None:
    valid = message_pb2.SendMessageRequest(
        sender_email="alice@example.com",
        receiver_email="bob@example.com",
        content="hello",
        client_request_id="req-1",
    )
    asked: list[str] = []

    def known(rpc: MethodDescriptor) -> st.SearchStrategy[Message] | None:
        asked.append(rpc.name)
        return st.just(valid) if rpc.name == "SendMessage" else None

    requests = fuzz.typed(fuzz.request_strategy(SEND, known=known), message_pb2.SendMessageRequest)
    assert asked == ["SendMessage"]

    def differing(r: message_pb2.SendMessageRequest) -> list[str]:
        return [f.name for f in r.DESCRIPTOR.fields if getattr(r, f.name) != getattr(valid, f.name)]

    reached(
        requests,
        {
            "valid as is": lambda r: r == valid,
            "one field mutated": lambda r: len(differing(r)) == 1,
            "one field cleared": lambda r: differing(r) == ["content"] and r.content == "",
            "fuzzed": lambda r: len(differing(r)) == 4,
        },
    )
    fuzz.request_strategy(GET_MESSAGE, known=known)  # no hook for it: only fuzzed requests
    assert asked == ["SendMessage", "GetMessage"]


def test_complete_message_sets_every_named_field_and_nested_ones() -> None:
    values: fuzz.Overrides = {
        "email": st.sampled_from(["ada@example.com", "bob@example.com"]),
        "message_id": st.integers(1, 9),
        "Notification.id": st.just("7"),
        "read": st.none(),
    }
    receive = fuzz.typed(
        fuzz.complete_message(RECEIVE.input_type, values), frontend_pb2.ReceiveNotificationRequest
    )

    @settings(max_examples=30, deadline=None)
    @given(receive)
    def complete(request: frontend_pb2.ReceiveNotificationRequest) -> None:
        assert request.HasField("notification")  # completed although not named
        item = request.notification
        assert item.id == "7" and 1 <= item.message_id <= 9 and not item.read
        assert item.sender_email == "" and not item.HasField("timestamp")  # no entry: unset

    complete()
    send = fuzz.typed(
        fuzz.complete_message(SEND.input_type, {"sender_email": st.just("a@example.com")}),
        message_pb2.SendMessageRequest,
    )
    occurs(send, lambda r: r.sender_email == "a@example.com" and r.content == "")


def test_metadata_strategy_mixes_missing_forged_and_real_credentials() -> None:
    metadata = fuzz.metadata_strategy(tokens=["user-token"], service_tokens=["svc-token"])
    reached(
        metadata,
        {
            "none": lambda m: m == (),
            "user token": lambda m: m == (("authorization", "Bearer user-token"),),
            "user token as a service credential": lambda m: (
                m == (("x-missive-service-token", "user-token"),)
            ),
            "service token": lambda m: m == (("x-missive-service-token", "svc-token"),),
            "wrong scheme": lambda m: bool(m) and m[0][1].startswith("Basic"),
        },
    )


# ---- documented statuses


@pytest.mark.parametrize("rpc", METHODS, ids=lambda m: m.name)
def test_documented_statuses_are_parsed_for_every_rpc(rpc: MethodDescriptor) -> None:
    statuses = fuzz.documented_statuses(rpc)
    assert fuzz.ALWAYS_POSSIBLE <= statuses
    assert grpc.StatusCode.INVALID_ARGUMENT in statuses  # every RPC validates its input
    assert not statuses & {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


def test_documented_statuses_follow_each_comment() -> None:
    extra = {m.name: fuzz.documented_statuses(m) - fuzz.ALWAYS_POSSIBLE for m in METHODS}
    code = grpc.StatusCode
    assert extra["SendMessage"] == frozenset(
        {code.INVALID_ARGUMENT, code.NOT_FOUND, code.ALREADY_EXISTS}
    )
    assert extra["GetUser"] == frozenset({code.INVALID_ARGUMENT, code.NOT_FOUND})
    assert extra["MarkNotificationRead"] == frozenset({code.INVALID_ARGUMENT, code.NOT_FOUND})
    assert extra["ListUsers"] == frozenset({code.INVALID_ARGUMENT})
    # ABORTED: a stream replaced by a newer one of the same account (per-account stream cap).
    assert extra["SubscribeNotifications"] == frozenset({code.INVALID_ARGUMENT, code.ABORTED})


def test_parse_errors_reads_the_errors_line_only() -> None:
    comment = (
        " Does things.\n Errors: INVALID_ARGUMENT (not NOT_FOUND (nested) here), NOT_FOUND\n"
        " (a wrapped explanation), ALREADY_EXISTS.\n Auth: public. DATA_LOSS is not an error.\n"
    )
    code = grpc.StatusCode
    expected = frozenset({code.INVALID_ARGUMENT, code.NOT_FOUND, code.ALREADY_EXISTS})
    assert fuzz.parse_errors(comment) == expected
    assert fuzz.parse_errors(" Errors: UNAVAILABLE") == frozenset({code.UNAVAILABLE})
    assert fuzz.parse_errors(" No errors documented.\n Auth: public.") is None
    with pytest.raises(ValueError, match="INVALID_ARGUMNET"):
        fuzz.parse_errors(" Errors: INVALID_ARGUMNET.")


# ---- call_rpc against an in-process server


def _notification(number: int) -> notification_pb2.Notification:
    return notification_pb2.Notification(id=str(number), message_id=number)


async def _receive(
    request: frontend_pb2.ReceiveNotificationRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> frontend_pb2.ReceiveNotificationResponse:
    if not request.notification.id:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "notification.id is required")
    metadata = dict(context.invocation_metadata() or ())
    return frontend_pb2.ReceiveNotificationResponse(delivered_to=int("authorization" in metadata))


async def _subscribe(
    request: frontend_pb2.SubscribeNotificationsRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[notification_pb2.Notification]:
    if request.email == "bad":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed email")
    count = {"many@example.com": 10, "two@example.com": 2, "fail@example.com": 1}.get(
        request.email, 0
    )
    for number in range(1, count + 1):
        yield _notification(number)
    if request.email == "fail@example.com":
        await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
    if request.email == "quiet@example.com":
        await asyncio.sleep(60)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "missive.frontend.v1.FrontendService",
        {
            "ReceiveNotification": grpc.unary_unary_rpc_method_handler(
                _receive,
                request_deserializer=frontend_pb2.ReceiveNotificationRequest.FromString,
                response_serializer=frontend_pb2.ReceiveNotificationResponse.SerializeToString,
            ),
            "SubscribeNotifications": grpc.unary_stream_rpc_method_handler(
                _subscribe,
                request_deserializer=frontend_pb2.SubscribeNotificationsRequest.FromString,
                response_serializer=notification_pb2.Notification.SerializeToString,
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as connected:
        yield connected
    await server.stop(None)


async def test_call_rpc_unary(channel: grpc.aio.Channel) -> None:
    ok = frontend_pb2.ReceiveNotificationRequest(notification=_notification(1))
    code, reply = await fuzz.call_rpc(channel, RECEIVE, ok, (("authorization", "Bearer x"),), 5)
    assert code == grpc.StatusCode.OK
    assert reply == frontend_pb2.ReceiveNotificationResponse(delivered_to=1)
    bad = frontend_pb2.ReceiveNotificationRequest()
    assert await fuzz.call_rpc(channel, RECEIVE, bad, (), 5) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        None,
    )
    result = await fuzz.call_rpc_detailed(channel, RECEIVE, bad)
    assert result.details == "notification.id is required"


async def test_call_rpc_server_streaming(channel: grpc.aio.Channel) -> None:
    def subscribe(email: str) -> frontend_pb2.SubscribeNotificationsRequest:
        return frontend_pb2.SubscribeNotificationsRequest(email=email)

    code, items = await fuzz.call_rpc(channel, SUBSCRIBE, subscribe("many@example.com"), (), 5)
    assert code == grpc.StatusCode.OK
    assert items == [_notification(1), _notification(2), _notification(3)]  # at most a few
    code, items = await fuzz.call_rpc(channel, SUBSCRIBE, subscribe("two@example.com"), (), 5)
    assert (code, items) == (grpc.StatusCode.OK, [_notification(1), _notification(2)])
    code, items = await fuzz.call_rpc(channel, SUBSCRIBE, subscribe("quiet@example.com"), (), 5)
    assert (code, items) == (grpc.StatusCode.OK, [])  # open and quiet: healthy
    assert await fuzz.call_rpc(channel, SUBSCRIBE, subscribe("bad"), (), 5) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        None,
    )
    assert await fuzz.call_rpc(channel, SUBSCRIBE, subscribe("fail@example.com"), (), 5) == (
        grpc.StatusCode.NOT_FOUND,
        None,
    )


async def test_call_rpc_reports_an_unreachable_server() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as nowhere:
        request = frontend_pb2.ReceiveNotificationRequest(notification=_notification(1))
        code, reply = await fuzz.call_rpc(nowhere, RECEIVE, request, (), 2)
    assert (code, reply) == (grpc.StatusCode.UNAVAILABLE, None)
