"""Every RPC of every service, fuzzed against the running system with the gRPC fuzzer.

For each RPC, Hypothesis draws requests (hostile ones built from the request's fields, valid
ones from known state — registered users, their real tokens, real message ids — and valid ones
with one field mutated) and call metadata (none, forged, real user tokens, real and misused
service credentials), and checks on every call that:

- the status is never INTERNAL or UNKNOWN, and is one the RPC documents on its `Errors:` line
  (plus OK, UNAUTHENTICATED, PERMISSION_DENIED, UNAVAILABLE, RESOURCE_EXHAUSTED);
- a successful reply is consistent with the request (ids set, emails normalised, pages within
  their size);
- the service still reports SERVING on the gRPC health service;
- a request rejected with INVALID_ARGUMENT changed nothing in Redis (no key added, removed or
  changed in any service database; streams compared by entries added).

`MISSIVE_FUZZ_EXAMPLES` sets the number of examples per RPC (default 15, drawn the same way on
every run; when the variable is set, each run explores new examples).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
import redis
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from missive.access import RPC_ACCESS
from missive.frontend.v1 import frontend_pb2
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2
from missive.user.v1 import user_pb2

from services.common.auth import KeyRing, ServiceCredentials
from tests.contract import grpc_fuzz as fuzz
from tests.contract.report import REPORT
from tests.helpers.clients import PASSWORD, Stubs, User, register_and_login
from tests.helpers.grpc_clients import SERVING, health_status
from tests.helpers.system import System

LIVE = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = int(os.environ.get("MISSIVE_FUZZ_EXAMPLES", "15"))
DETERMINISTIC = "MISSIVE_FUZZ_EXAMPLES" not in os.environ
"""The default (fast) run draws the same examples every time, so it cannot flake; a deeper
run with MISSIVE_FUZZ_EXAMPLES explores new ones on each run."""
SERVICES = {
    "user": user_pb2.DESCRIPTOR.services_by_name["UserService"],
    "message": message_pb2.DESCRIPTOR.services_by_name["MessageService"],
    "notification": notification_pb2.DESCRIPTOR.services_by_name["NotificationService"],
    "frontend": frontend_pb2.DESCRIPTOR.services_by_name["FrontendService"],
}
METHODS = [(name, m) for name, service in SERVICES.items() for m in fuzz.rpc_methods(service)]
DATABASES = (0, 1, 2)
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SUITE = "gRPC"


# --------------------------------------------------------------------------------------------
# the running system and what is known about it


@dataclass
class Known:
    """State created before fuzzing, from which valid requests are drawn."""

    users: list[User]
    message_ids: list[int]
    notification_ids: list[str]
    service_tokens: dict[str, list[str]] = field(default_factory=dict)
    """Per target service: credentials of every service (allowed to call it or not)."""

    @property
    def emails(self) -> list[str]:
        return [user.email for user in self.users]

    def values(self) -> fuzz.Overrides:
        """Valid field values by field name, for :func:`grpc_fuzz.complete_message`."""
        emails = st.sampled_from(self.emails)
        now = int(time.time())
        return {
            "email": emails,
            "sender_email": emails,
            "receiver_email": emails,
            "user_email": emails,
            "peer_email": st.one_of(emails, st.just("")),
            "emails": st.lists(emails, min_size=1, max_size=3),
            "password": st.sampled_from([PASSWORD, PASSWORD + "!"]),
            "content": st.text(string.ascii_letters + " ,.!?é😀", min_size=1, max_size=40),
            "client_request_id": st.one_of(
                st.just(""), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
            ),
            "page_size": st.integers(0, 100),
            "page_token": st.just(""),
            "unread_only": st.booleans(),
            "read": st.booleans(),
            "GetMessageRequest.id": st.sampled_from(self.message_ids),
            "DeleteMessageRequest.id": st.sampled_from(self.message_ids),
            "MarkNotificationReadRequest.id": st.sampled_from(self.notification_ids),
            "Notification.id": st.sampled_from(self.notification_ids),
            "message_id": st.sampled_from(self.message_ids),
            "timestamp": st.builds(Timestamp, seconds=st.integers(now - 86_400, now)),
            # Dead-letter ids (<milliseconds>-<sequence>); the admin RPCs take some or all.
            "ids": st.lists(
                st.from_regex(r"[0-9]{13}-[0-9]{1,2}", fullmatch=True), min_size=1, max_size=3
            ),
            "all": st.just(False),
        }

    def known(self, method: MethodDescriptor) -> st.SearchStrategy[Message] | None:
        return fuzz.complete_message(method.input_type, self.values())


@dataclass
class Live:
    system: System
    known: Known
    loop: asyncio.AbstractEventLoop
    channels: dict[str, grpc.aio.Channel]
    databases: dict[int, redis.Redis]

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    system = System.create(tmp_path_factory.mktemp("contract-system"))
    loop = asyncio.new_event_loop()
    try:
        system.start()
        known = loop.run_until_complete(_prepare(system))
        for target in SERVICES:
            known.service_tokens[target] = [
                ServiceCredentials(KeyRing.load(system.keys_dir, caller)).token_for(target)
                for caller in SERVICES
            ]

        async def connect() -> dict[str, grpc.aio.Channel]:
            return {name: grpc.aio.insecure_channel(system.grpc_addr(name)) for name in SERVICES}

        channels = loop.run_until_complete(connect())
        databases = {
            db: redis.Redis.from_url(system.valkey.url, db=db, socket_timeout=5) for db in DATABASES
        }
        yield Live(system, known, loop, channels, databases)
        for client in databases.values():
            client.close()
        for channel in channels.values():
            loop.run_until_complete(channel.close())
    finally:
        loop.close()
        system.close()


async def _prepare(system: System) -> Known:
    await system.wait_healthy()
    users = [await register_and_login(system, name) for name in ("Ada", "Bob", "Cy")]
    stubs = Stubs.connect(system)
    try:
        ada, bob, cy = users
        sent = [
            await stubs.send(ada, bob, "hello Bob"),
            await stubs.send(bob, ada, "hi Ada"),
            await stubs.send(cy, ada, "hey"),
        ]
        notifications: list[str] = []
        deadline = time.monotonic() + 15
        while len(notifications) < 2 and time.monotonic() < deadline:
            listed = await stubs.notification.ListNotifications(
                notification_pb2.ListNotificationsRequest(email=ada.email),
                metadata=ada.metadata,
                timeout=5,
            )
            notifications = [n.id for n in listed.notifications]
            await asyncio.sleep(0.1)
        assert notifications, "the notifications of the setup messages never arrived"
    finally:
        await stubs.close()
    return Known(users, [m.id for m in sent] + [1, 2], notifications)


# --------------------------------------------------------------------------------------------
# Redis: what a rejected request must leave untouched


Snapshot = dict[tuple[int, bytes], tuple[bytes, bool]]
"""(db, key) -> (digest of the value, whether the key may expire)."""


def _snapshot(databases: dict[int, redis.Redis]) -> Snapshot:
    found: Snapshot = {}
    for db, client in databases.items():
        keys = [bytes(key) for key in client.scan_iter(count=1000)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.pttl(key)
        meta = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for key, kind in zip(keys, meta[::2], strict=True):
            if kind == b"stream":  # relays ack and claim entries; only added entries count
                pipe.xinfo_stream(key)
            else:
                pipe.dump(key)
        values = pipe.execute(raise_on_error=False)
        for key, ttl, value in zip(keys, meta[1::2], values, strict=True):
            if isinstance(value, dict):  # XINFO STREAM
                info = {k.decode() if isinstance(k, bytes) else k: v for k, v in value.items()}
                value = repr((info.get("entries-added"), info.get("last-generated-id")))
            data = value if isinstance(value, bytes) else repr(value).encode()
            found[(db, key)] = (hashlib.sha256(data).digest(), int(ttl) >= 0)
    return found


def _settled_snapshot(databases: dict[int, redis.Redis], within: float = 3.0) -> Snapshot:
    """A snapshot once background relays have stopped writing (two equal in a row)."""
    deadline = time.monotonic() + within
    previous = _snapshot(databases)
    while time.monotonic() < deadline:
        time.sleep(0.03)
        current = _snapshot(databases)
        if current == previous:
            return current
        previous = current
    return previous


def _writes(before: Snapshot, after: Snapshot) -> list[str]:
    changes = []
    for key in sorted(before.keys() | after.keys()):
        db, name = key
        if key not in before:
            changes.append(f"db {db}: {name!r} added")
        elif key not in after:
            if not before[key][1]:  # keys with a TTL may expire by themselves
                changes.append(f"db {db}: {name!r} removed")
        elif before[key][0] != after[key][0]:
            changes.append(f"db {db}: {name!r} changed")
    return changes


# --------------------------------------------------------------------------------------------
# replies consistent with their requests


def _normalised(email: str) -> str:
    return email.strip().lower()


def _page_limit(request: Any) -> int:
    return request.page_size or 50


def _check_send(request: Any, reply: Any) -> None:
    assert reply.message.id >= 1
    assert reply.message.sender_email == _normalised(request.sender_email)
    assert reply.message.receiver_email == _normalised(request.receiver_email)
    assert reply.message.HasField("timestamp")


def _check_message(request: Any, reply: Any) -> None:
    assert reply.id == request.id
    assert _normalised(request.user_email) in (reply.sender_email, reply.receiver_email)


def _check_messages(request: Any, reply: Any) -> None:
    assert len(reply.messages) <= _page_limit(request)
    me = _normalised(request.user_email)
    for item in reply.messages:
        assert me in (item.sender_email, item.receiver_email)


def _check_conversations(request: Any, reply: Any) -> None:
    assert len(reply.conversations) <= _page_limit(request)
    for item in reply.conversations:
        assert item.message_count >= 1 and item.HasField("last_message")


def _check_conversation(request: Any, reply: Any) -> None:
    assert reply.peer_email == _normalised(request.peer_email)
    assert reply.unread_count == 0


def _check_subscription(request: Any, reply: Any) -> None:
    assert reply.email == _normalised(request.email)


def _check_notifications(request: Any, reply: Any) -> None:
    assert len(reply.notifications) <= _page_limit(request)
    for item in reply.notifications:
        assert item.receiver_email == _normalised(request.email)
        assert not (request.unread_only and item.read)


def _check_notification(request: Any, reply: Any) -> None:
    assert reply.id == request.id and reply.read
    assert reply.receiver_email == _normalised(request.email)


def _check_authenticate(request: Any, reply: Any) -> None:
    if reply.authenticated:
        assert reply.access_token and reply.token_type == "Bearer"
        assert reply.HasField("expires_at")
    else:
        assert not reply.access_token and not reply.HasField("expires_at")


def _check_user(request: Any, reply: Any) -> None:
    assert reply.email == _normalised(request.email) and reply.name


def _check_users(request: Any, reply: Any) -> None:
    assert len(reply.users) <= _page_limit(request)
    emails = [item.email for item in reply.users]
    assert emails == sorted(emails)


def _check_created(request: Any, reply: Any) -> None:
    assert reply.subscribed == reply.HasField("notification")
    if reply.HasField("notification"):
        assert reply.notification.message_id == request.message_id


def _check_created_each(request: Any, reply: Any) -> None:
    assert len(reply.results) == len(request.items)
    for item, result in zip(request.items, reply.results, strict=True):
        assert bool(result.invalid_argument) != result.HasField("response")
        if result.HasField("response"):
            _check_created(item, result.response)


def _check_received_each(request: Any, reply: Any) -> None:
    assert len(reply.results) == len(request.items)
    for result in reply.results:
        assert not (result.invalid_argument and result.delivered_to)


def _check_stream(request: Any, reply: Any) -> None:
    for item in reply:
        assert item.receiver_email == _normalised(request.email)


def _check_dead_letters(request: Any, reply: Any) -> None:
    assert len(reply.dead_letters) <= min(_page_limit(request), reply.total)
    for item in reply.dead_letters:
        assert item.id and item.HasField("dead_lettered_at")


def _check_acted_on(count_field: str) -> Callable[[Any, Any], None]:
    def check(request: Any, reply: Any) -> None:
        count = getattr(reply, count_field)
        assert count >= 0 and set(reply.not_found) <= set(request.ids)
        if not request.all:
            assert count + len(reply.not_found) == len(set(request.ids))

    return check


REPLY_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "SendMessage": _check_send,
    "GetMessage": _check_message,
    "GetMessages": _check_messages,
    "ListConversations": _check_conversations,
    "MarkConversationRead": _check_conversation,
    "CheckUserSubscribed": _check_subscription,
    "SubscribeUser": _check_subscription,
    "UnsubscribeUser": _check_subscription,
    "ListNotifications": _check_notifications,
    "MarkNotificationRead": _check_notification,
    "AuthenticateUser": _check_authenticate,
    "GetUser": _check_user,
    "ListUsers": _check_users,
    "CreateNotification": _check_created,
    "CreateNotifications": _check_created_each,
    "ReceiveNotifications": _check_received_each,
    "SubscribeNotifications": _check_stream,
    "ListDeadLetters": _check_dead_letters,
    "ReplayDeadLetters": _check_acted_on("replayed"),
    "DropDeadLetters": _check_acted_on("dropped"),
}


# --------------------------------------------------------------------------------------------
# the property


Metadata = tuple[tuple[str, str], ...]


def _calls(
    live: Live, service: str, rpc: MethodDescriptor
) -> st.SearchStrategy[tuple[Message, Metadata]]:
    """(request, metadata) pairs: most often the credential the request's owner would use (so
    validation and business logic are reached), otherwise any metadata at all."""
    known = live.known
    tokens = {user.email: user.token for user in known.users}
    access = RPC_ACCESS[fuzz.method_path(rpc)]
    allowed = [
        ServiceCredentials(KeyRing.load(live.system.keys_dir, caller)).token_for(service)
        for caller in sorted(access.services)
    ]
    anything = fuzz.metadata_strategy(list(tokens.values()), known.service_tokens[service])
    requests = fuzz.request_strategy(rpc, known=known.known)
    emails = [f.name for f in rpc.input_type.fields if f.name.endswith("email")]

    @st.composite
    def calls(draw: st.DrawFn) -> tuple[Message, Metadata]:
        request = draw(requests)
        if not draw(st.integers(0, 3)):
            return request, draw(anything)
        if allowed and (not access.users or draw(st.booleans())):
            return request, (("x-missive-service-token", draw(st.sampled_from(allowed))),)
        owner = _normalised(getattr(request, emails[0])) if emails else ""
        token = tokens.get(owner) or draw(st.sampled_from(list(tokens.values())))
        return request, (("authorization", f"Bearer {token}"),)

    return calls()


@pytest.mark.parametrize(
    ("service", "rpc"),
    [pytest.param(name, m, id=m.full_name, marks=LIVE) for name, m in METHODS],
)
def test_rpc_honours_its_contract(live: Live, service: str, rpc: MethodDescriptor) -> None:
    documented = fuzz.documented_statuses(rpc)
    REPORT.declare(SUITE, service, [m.name for m in fuzz.rpc_methods(SERVICES[service])])
    channel = live.channels[service]
    calls = _calls(live, service, rpc)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DETERMINISTIC,
        suppress_health_check=list(HealthCheck),
    )
    @given(call=calls)
    def check(call: tuple[Message, tuple[tuple[str, str], ...]]) -> None:
        request, call_metadata = call
        before = _settled_snapshot(live.databases)
        result = live.run(
            fuzz.call_rpc_detailed(channel, rpc, request, call_metadata, 10, stream_idle=0.3)
        )
        REPORT.record(SUITE, service, rpc.name, result.code.name)
        credentials = ", ".join(f"{k}: {v[:24]!r}..." for k, v in call_metadata) or "none"
        shown = (
            f"{rpc.name}({fuzz.compact_repr(request)}) with metadata {{{credentials}}} -> "
            f"{result.code.name}: {result.details}"
        )
        assert result.code not in NEVER, shown
        assert result.code in documented, f"undocumented status: {shown}"
        if result.code == grpc.StatusCode.OK and rpc.name in REPLY_CHECKS:
            REPLY_CHECKS[rpc.name](request, result.reply)
        assert live.run(health_status(channel)) == SERVING, f"{service} unhealthy after {shown}"
        if result.code == grpc.StatusCode.INVALID_ARGUMENT:
            writes = _writes(before, _snapshot(live.databases))
            assert not writes, f"rejected input wrote to Redis: {shown}: {writes}"

    check()


@pytest.mark.e2e
def test_emails_are_normalised_as_the_contracts_document(live: Live) -> None:
    rpc = SERVICES["notification"].methods_by_name["CheckUserSubscribed"]
    token = ServiceCredentials(KeyRing.load(live.system.keys_dir, "message")).token_for(
        "notification"
    )

    def check(email: str) -> tuple[grpc.StatusCode, Any]:
        request = notification_pb2.CheckUserSubscribedRequest(email=email)
        answer: tuple[grpc.StatusCode, Any] = live.run(
            fuzz.call_rpc(
                live.channels["notification"],
                rpc,
                request,
                (("x-missive-service-token", token),),
                10,
            )
        )
        return answer

    # Validated, not rewritten: no IDNA decoding, no Unicode normalisation into another key.
    for email in ("0@0.XN--01A", "a@xn--bcher-kva.example", "\u00e9@example.com"):
        code, reply = check(email)
        assert code == grpc.StatusCode.OK
        assert isinstance(reply, notification_pb2.SubscriptionStatus)
        assert reply.email == email.strip().lower()
    # A spelling that is not in NFC is refused rather than registered as a look-alike.
    code, _ = check("e\u0301@example.com")
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_every_rpc_is_fuzzed() -> None:
    assert {fuzz.method_path(m) for _, m in METHODS} == set(RPC_ACCESS)


def test_known_state_builds_valid_requests_for_every_rpc() -> None:
    known = Known([User("ada@example.com", "t"), User("bob@example.com", "u")], [1, 2], ["1", "2"])

    @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data: Any) -> None:
        for _, rpc in METHODS:
            strategy = known.known(rpc)
            assert strategy is not None
            request = data.draw(strategy)
            for item in rpc.input_type.fields:
                if "email" in item.name and item.name != "peer_email":
                    value = getattr(request, item.name)
                    values = list(value) if item.is_repeated else [value]
                    assert values and all(v in known.emails for v in values), (
                        rpc.name,
                        item.name,
                    )

    check()


def test_the_redis_check_sees_writes_but_not_relay_bookkeeping_or_expiry(redis_url: str) -> None:
    databases = {db: redis.Redis.from_url(redis_url, db=db) for db in DATABASES}
    try:
        db1, db2 = databases[1], databases[2]
        db1.set("message:1", "a")
        db1.set("lock", "x", px=50)
        db2.xadd("outbox", {"event": "1"})
        db2.xgroup_create("outbox", "relay", id="0")
        before = _snapshot(databases)
        assert _writes(before, _snapshot(databases)) == []

        db2.xreadgroup("relay", "worker", {"outbox": ">"})  # a relay reads and acks
        entries = db2.xrange("outbox")
        assert entries and entries[0][0] is not None
        db2.xack("outbox", "relay", entries[0][0])
        time.sleep(0.1)  # the lock expires by itself
        assert _writes(before, _snapshot(databases)) == []

        db1.set("message:1", "b")
        db1.set("message:2", "c")
        db2.xadd("outbox", {"event": "2"})
        databases[0].set("user:x", "y")
        assert _writes(before, _snapshot(databases)) == [
            "db 0: b'user:x' added",
            "db 1: b'message:1' changed",
            "db 1: b'message:2' added",
            "db 2: b'outbox' changed",
        ]
        db1.delete("message:1")
        assert "db 1: b'message:1' removed" in _writes(before, _snapshot(databases))
    finally:
        for client in databases.values():
            client.close()
