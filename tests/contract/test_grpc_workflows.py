"""User workflows over gRPC, as a Hypothesis state machine checked against a model after every step.

Each scenario registers three fresh users (REST, the only way to register) and signs them in
with UserService AuthenticateUser; Hypothesis then interleaves, in any order: signing in again
(sometimes after a wrong password), SendMessage (to anyone, as a reply, or to a user who has
unsubscribed), GetMessage, MarkNotificationRead, MarkAllNotificationsRead, MarkConversationRead,
UnsubscribeUser, SubscribeUser and an outsider probing a conversation they are not part of.
`test_the_whole_chain` also plays the chain once in order (register, sign in, send, read,
notification listed, mark read, unsubscribe, send without notification, resubscribe, send).

The machine keeps a model (messages sent, who was subscribed when each was sent, what was marked
read) and after every step checks that:

- one notification per message: each user's notifications have distinct message ids, each one
  is about a message sent to that user while they were subscribed (sender, receiver and
  timestamp those of the message), every such message has exactly one, listed newest first,
  and a message sent while the receiver was unsubscribed never gets one;
- unread counts: the read flags, the unread_only listing and unread_count of ListNotifications
  are the model's (MarkNotificationRead / MarkAllNotificationsRead); ListConversations lists
  one conversation per peer, most recent first, with the model's message_count, last_message
  and unread_count (messages received from the peer not yet covered by MarkConversationRead);
- conversation membership: GetMessages(user, peer) returns exactly the messages the two
  exchanged (and with no peer, all of the user's), newest first, each with the user as sender
  or receiver and the read flag of the model; GetMessage gives a participant the message; a
  third user gets NOT_FOUND for the message and PERMISSION_DENIED on the members' data, and
  nothing they attempted changes anything;
- subscriptions: CheckUserSubscribed agrees with the model (subscribed by default).

Notifications are delivered asynchronously (MessageService's outbox relay calls
NotificationService), so a send to a subscribed user waits (up to 10 s) until its notification
is listed. After a send to an unsubscribed user the machine waits until the relay has drained:
it sends a message between two always-subscribed probe users and waits for that one's
notification (the relay delivers its stream in order, so the earlier message was processed),
and lets at least half a second pass; only then is the absence of a notification checked.

Without `MISSIVE_FUZZ_EXAMPLES` the same 10 scenarios of up to 20 steps run every time; with it,
max(MISSIVE_FUZZ_EXAMPLES // 10, 4) scenarios of up to 25 steps, drawn anew on each run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import grpc
import grpc.aio
import httpx
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from missive.message.v1 import message_pb2
from missive.notification.v1 import notification_pb2
from missive.user.v1 import user_pb2

from tests.contract.report import REPORT
from tests.helpers.clients import PASSWORD, Stubs, User, register_and_login
from tests.helpers.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLES = int(os.environ.get("MISSIVE_FUZZ_EXAMPLES", "15"))
DETERMINISTIC = "MISSIVE_FUZZ_EXAMPLES" not in os.environ
"""The default (fast) run plays the same scenarios every time, so it cannot flake; a deeper
run with MISSIVE_FUZZ_EXAMPLES explores new ones on each run."""
SETTINGS = settings(
    max_examples=10 if DETERMINISTIC else max(EXAMPLES // 10, 4),
    stateful_step_count=20 if DETERMINISTIC else 25,
    derandomize=DETERMINISTIC,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

NAMES = ("Ada", "Bob", "Cy")
USERS = len(NAMES)
DELIVERY_WITHIN = 10.0
"""Seconds a notification may take to be listed after its message was sent."""
POLL_EVERY = 0.05
SETTLE = 0.5
"""Seconds that pass, at least, between a send to an unsubscribed user and the check."""
PAGE = 100
MAX_PAGES = 50
CALL_TIMEOUT = 10.0

T = TypeVar("T")

WHO = st.integers(0, USERS - 1)
OFFSET = st.integers(1, USERS - 1)
"""A peer, as an offset from the user (so never the user)."""
CONTENT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)


SUITE = "gRPC stateful"
R = TypeVar("R")


def _step(rule_function: Callable[..., R]) -> Callable[..., R]:
    """Record each step that ran to its end, for the fuzzing summary."""

    @functools.wraps(rule_function)
    def step(*args: Any, **kwargs: Any) -> R:
        result = rule_function(*args, **kwargs)
        REPORT.record(SUITE, "workflows", rule_function.__name__, "done")
        return result

    return step


# --------------------------------------------------------------------------------------------
# the running system


@dataclass
class Live:
    system: System
    loop: asyncio.AbstractEventLoop
    stubs: Stubs
    probe: tuple[User, User]
    """Two users who stay subscribed: a message between them shows that the relay drained."""

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def call(self, rpc: Callable[[], Awaitable[T]]) -> T:
        """Start ``rpc()`` on the system's loop (gRPC aio calls bind to the running loop)."""

        async def go() -> T:
            return await rpc()

        return self.run(go())

    def status(self, rpc: Callable[[], Awaitable[Any]]) -> grpc.StatusCode:
        try:
            self.call(rpc)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    # Every sign-in comes from 127.0.0.1: lift the per-client throttle for the many scenarios;
    # the probe users sign in once, so their tokens must outlast a long run.
    system = System.create(
        tmp_path_factory.mktemp("workflow-system"),
        USER_LOGIN_CLIENT_ATTEMPTS="100000",
        USER_TOKEN_TTL="86400",
    )
    loop = asyncio.new_event_loop()
    try:
        system.start()
        stubs, probe = loop.run_until_complete(_prepare(system))
        try:
            yield Live(system, loop, stubs, probe)
        finally:
            loop.run_until_complete(stubs.close())
    finally:
        loop.close()
        system.close()


async def _prepare(system: System) -> tuple[Stubs, tuple[User, User]]:
    await system.wait_healthy()
    probe = (await register_and_login(system, "Probe"), await register_and_login(system, "Sink"))
    return Stubs.connect(system), probe


async def _register(system: System, names: list[str], emails: list[str]) -> None:
    async with httpx.AsyncClient(base_url=system.rest_url("user"), timeout=CALL_TIMEOUT) as http:
        replies = await asyncio.gather(
            *(
                http.post("/users", json={"name": name, "email": email, "password": PASSWORD})
                for name, email in zip(names, emails, strict=True)
            )
        )
    for reply in replies:
        assert reply.status_code == 201, reply.text


# --------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Sent:
    """A message as the model knows it."""

    id: int
    sender: int
    receiver: int
    content: str
    timestamp: tuple[int, int]
    notified: bool
    """The receiver was subscribed when it was sent: exactly one notification is due."""


def _stamp(timestamp: Timestamp) -> tuple[int, int]:
    return timestamp.seconds, timestamp.nanos


@dataclass
class Observed:
    """What the system lists for one user, fetched in one go after a step."""

    notifications: list[notification_pb2.Notification] = field(default_factory=list)
    unread_count: int = 0
    unread: list[notification_pb2.Notification] = field(default_factory=list)
    unread_only_count: int = 0
    conversations: list[message_pb2.Conversation] = field(default_factory=list)
    with_peer: dict[int, list[message_pb2.Message]] = field(default_factory=dict)
    everything: list[message_pb2.Message] = field(default_factory=list)
    subscribed: bool = True


# --------------------------------------------------------------------------------------------
# the state machine


class Workflows(RuleBasedStateMachine):
    live: ClassVar[Live]

    messages: Bundle[Sent] = Bundle("messages")

    def __init__(self) -> None:
        super().__init__()
        self.users: list[User] = []
        self.subscribed: list[bool] = []
        self.sent: list[Sent] = []
        self.notification_read: set[int] = set()
        """Ids of the messages whose notification the receiver marked read."""
        self.conversation_read: set[int] = set()
        """Ids of the messages the receiver marked read with MarkConversationRead."""

    # -- helpers ------------------------------------------------------------------------------

    @property
    def stubs(self) -> Stubs:
        return self.live.stubs

    def _authenticate(self, email: str, password: str) -> user_pb2.AuthenticateUserResponse:
        request = user_pb2.AuthenticateUserRequest(email=email, password=password)
        return self.live.call(
            lambda: self.stubs.user.AuthenticateUser(request, timeout=CALL_TIMEOUT)
        )

    def _between(self, a: int, b: int) -> list[Sent]:
        """Messages exchanged by users a and b, newest first."""
        pair = {a, b}
        return sorted(
            (s for s in self.sent if {s.sender, s.receiver} == pair),
            key=lambda s: s.id,
            reverse=True,
        )

    def _due(self, who: int) -> list[int]:
        """Ids of the messages that must have a notification for ``who``, newest first."""
        return sorted((s.id for s in self.sent if s.receiver == who and s.notified), reverse=True)

    def _unread_from(self, who: int, peer: int) -> int:
        return sum(
            1
            for s in self.sent
            if s.receiver == who and s.sender == peer and s.id not in self.conversation_read
        )

    async def _all_pages(
        self,
        who: int,
        rpc: Callable[..., Awaitable[Any]],
        request: Callable[[str], Message],
        field: str,
    ) -> tuple[list[Any], Any]:
        """Every item of a paginated listing, following page tokens, and the last page."""
        user = self.users[who]
        items: list[Any] = []
        token = ""
        for _ in range(MAX_PAGES):
            page = await rpc(request(token), metadata=user.metadata, timeout=CALL_TIMEOUT)
            items.extend(getattr(page, field))
            if not page.next_page_token:
                return items, page
            token = page.next_page_token
        raise AssertionError(f"{field} of {user.email} never reached its last page")

    async def _notifications(
        self, who: int, unread_only: bool = False
    ) -> tuple[list[notification_pb2.Notification], int]:
        """Every stored notification of ``who`` (all pages) and the unread_count reported."""
        email = self.users[who].email
        items, last = await self._all_pages(
            who,
            self.stubs.notification.ListNotifications,
            lambda token: notification_pb2.ListNotificationsRequest(
                email=email, unread_only=unread_only, page_size=PAGE, page_token=token
            ),
            "notifications",
        )
        return items, last.unread_count

    async def _messages(self, who: int, peer: int | None) -> list[message_pb2.Message]:
        email = self.users[who].email
        peer_email = "" if peer is None else self.users[peer].email
        items, _ = await self._all_pages(
            who,
            self.stubs.message.GetMessages,
            lambda token: message_pb2.GetMessagesRequest(
                user_email=email, peer_email=peer_email, page_size=PAGE, page_token=token
            ),
            "messages",
        )
        return items

    async def _conversations(self, who: int) -> list[message_pb2.Conversation]:
        email = self.users[who].email
        items, _ = await self._all_pages(
            who,
            self.stubs.message.ListConversations,
            lambda token: message_pb2.ListConversationsRequest(
                user_email=email, page_size=PAGE, page_token=token
            ),
            "conversations",
        )
        return items

    async def _subscribed(self, who: int) -> bool:
        user = self.users[who]
        reply = await self.stubs.notification.CheckUserSubscribed(
            notification_pb2.CheckUserSubscribedRequest(email=user.email),
            metadata=user.metadata,
            timeout=CALL_TIMEOUT,
        )
        assert reply.email == user.email, reply
        return reply.subscribed

    async def _observe_one(self, who: int) -> Observed:
        peers = [p for p in range(USERS) if p != who]
        fixed = asyncio.gather(
            self._notifications(who),
            self._notifications(who, unread_only=True),
            self._conversations(who),
            self._messages(who, None),
            self._subscribed(who),
        )
        per_peer = asyncio.gather(*(self._messages(who, p) for p in peers))
        lists, with_peer = await asyncio.gather(fixed, per_peer)
        (
            (listed, unread_count),
            (unread, unread_only_count),
            conversations,
            everything,
            subscribed,
        ) = lists
        return Observed(
            listed,
            unread_count,
            unread,
            unread_only_count,
            conversations,
            dict(zip(peers, with_peer, strict=True)),
            everything,
            subscribed,
        )

    def _observe(self) -> list[Observed]:
        async def every_user() -> list[Observed]:
            return list(await asyncio.gather(*(self._observe_one(w) for w in range(USERS))))

        return self.live.run(every_user())

    def _check_message(self, message: message_pb2.Message, sent: Sent) -> None:
        """``message`` as the system returned it is ``sent`` as the model knows it."""
        sender, receiver = self.users[sent.sender], self.users[sent.receiver]
        assert message.id == sent.id, (message, sent)
        assert message.sender_email == sender.email, (message, sent)
        assert message.receiver_email == receiver.email, (message, sent)
        assert message.content == sent.content, (message, sent)
        assert _stamp(message.timestamp) == sent.timestamp, (message, sent)
        assert message.read == (sent.id in self.conversation_read), (
            f"message {sent.id}: read={message.read}, but the model says "
            f"{sent.id in self.conversation_read}"
        )

    def _await_notifications(self, who: int) -> None:
        """Poll until every notification the model expects for ``who`` is listed."""
        due = set(self._due(who))

        async def poll() -> set[int]:
            deadline = time.monotonic() + DELIVERY_WITHIN
            while True:
                listed, _ = await self._notifications(who)
                seen = {n.message_id for n in listed}
                if due <= seen or time.monotonic() > deadline:
                    return seen
                await asyncio.sleep(POLL_EVERY)

        seen = self.live.run(poll())
        assert due <= seen, (
            f"notifications of messages {sorted(due - seen)} for {self.users[who].email} "
            f"were not listed within {DELIVERY_WITHIN} s"
        )

    def _await_drain(self, since: float) -> None:
        """Wait until the relay processed every message sent before now (see the docstring)."""
        sender, receiver = self.live.probe

        async def probe() -> bool:
            sent = await self.stubs.send(sender, receiver, "drain probe")
            deadline = time.monotonic() + DELIVERY_WITHIN
            while True:
                page = await self.stubs.notification.ListNotifications(
                    notification_pb2.ListNotificationsRequest(email=receiver.email, page_size=10),
                    metadata=receiver.metadata,
                    timeout=CALL_TIMEOUT,
                )
                if any(n.message_id == sent.id for n in page.notifications):
                    break
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(POLL_EVERY)
            await asyncio.sleep(max(0.0, since + SETTLE - time.monotonic()))
            return True

        assert self.live.run(probe()), (
            f"the probe message was not notified within {DELIVERY_WITHIN} s: the relay is stuck"
        )

    def _outsider(self, sent: Sent) -> int:
        return next(w for w in range(USERS) if w not in (sent.sender, sent.receiver))

    # -- rules --------------------------------------------------------------------------------

    @initialize()
    @_step
    def register_and_sign_in(self) -> None:
        tag = uuid.uuid4().hex[:12]
        # Registered and signed in with a capitalised domain: every reply must normalise it.
        typed = [f"{name.lower()}-{tag}@Example.COM" for name in NAMES]
        self.live.run(_register(self.live.system, list(NAMES), typed))
        for email in typed:
            reply = self._authenticate(email, PASSWORD)
            assert reply.authenticated and reply.access_token, reply
            assert reply.token_type == "Bearer", reply
            self.users.append(User(email.lower(), reply.access_token))
        self.subscribed = [True] * USERS

    @rule(who=WHO, wrong_first=st.booleans())
    @_step
    def sign_in_again(self, who: int, wrong_first: bool) -> None:
        user = self.users[who]
        if wrong_first:
            refused = self._authenticate(user.email, PASSWORD + "!")
            assert not refused.authenticated, refused
            assert not refused.access_token and not refused.token_type, refused
        reply = self._authenticate(user.email, PASSWORD)
        assert reply.authenticated and reply.access_token, reply
        assert reply.token_type == "Bearer", reply
        user.token = reply.access_token

    def _send(self, who: int, receiver: int, content: str) -> Sent:
        """SendMessage, checked, then wait for its notification or for the relay to drain."""
        sender_user, receiver_user = self.users[who], self.users[receiver]
        request = message_pb2.SendMessageRequest(
            sender_email=sender_user.email, receiver_email=receiver_user.email, content=content
        )
        started = time.monotonic()
        reply = self.live.call(
            lambda: self.stubs.message.SendMessage(
                request, metadata=sender_user.metadata, timeout=CALL_TIMEOUT
            )
        )
        message = reply.message
        assert message.id > max((s.id for s in self.sent), default=0), message
        assert not message.read, message
        assert message.HasField("timestamp"), message
        sent = Sent(
            message.id,
            who,
            receiver,
            content,
            _stamp(message.timestamp),
            notified=self.subscribed[receiver],
        )
        self._check_message(message, sent)
        self.sent.append(sent)
        if sent.notified:
            self._await_notifications(receiver)
        else:
            self._await_drain(started)
            listed, _ = self.live.run(self._notifications(receiver))
            assert all(n.message_id != sent.id for n in listed), (
                f"message {sent.id} was sent while {receiver_user.email} was unsubscribed, "
                "yet it got a notification"
            )
        return sent

    @rule(target=messages, who=WHO, offset=OFFSET, content=CONTENT)
    @_step
    def send(self, who: int, offset: int, content: str) -> Sent:
        return self._send(who, (who + offset) % USERS, content)

    @rule(target=messages, to=messages, content=CONTENT)
    @_step
    def reply(self, to: Sent, content: str) -> Sent:
        """The receiver of a message answers its sender."""
        return self._send(to.receiver, to.sender, content)

    @precondition(lambda self: not all(self.subscribed))
    @rule(target=messages, data=st.data(), content=CONTENT)
    @_step
    def send_to_unsubscribed(self, data: st.DataObject, content: str) -> Sent:
        receiver = data.draw(
            st.sampled_from([w for w in range(USERS) if not self.subscribed[w]]), label="receiver"
        )
        who = (receiver + data.draw(OFFSET, label="offset")) % USERS
        return self._send(who, receiver, content)

    @rule(sent=messages, as_receiver=st.booleans())
    @_step
    def get_message(self, sent: Sent, as_receiver: bool) -> None:
        user = self.users[sent.receiver if as_receiver else sent.sender]
        request = message_pb2.GetMessageRequest(user_email=user.email, id=sent.id)
        message = self.live.call(
            lambda: self.stubs.message.GetMessage(
                request, metadata=user.metadata, timeout=CALL_TIMEOUT
            )
        )
        self._check_message(message, sent)

    @rule(sent=messages)
    @_step
    def outsider_is_refused(self, sent: Sent) -> None:
        outsider = self.users[self._outsider(sent)]
        sender, receiver = self.users[sent.sender], self.users[sent.receiver]
        message, notification = self.stubs.message, self.stubs.notification
        probes: list[tuple[str, Any, Message, grpc.StatusCode]] = [
            (
                "GetMessage of a message between two others",
                message.GetMessage,
                message_pb2.GetMessageRequest(user_email=outsider.email, id=sent.id),
                grpc.StatusCode.NOT_FOUND,
            ),
            (
                "GetMessage in the sender's name",
                message.GetMessage,
                message_pb2.GetMessageRequest(user_email=sender.email, id=sent.id),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (
                "GetMessages of the members' conversation",
                message.GetMessages,
                message_pb2.GetMessagesRequest(user_email=receiver.email, peer_email=sender.email),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (
                "ListConversations of a member",
                message.ListConversations,
                message_pb2.ListConversationsRequest(user_email=sender.email),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (
                "MarkConversationRead in the receiver's name",
                message.MarkConversationRead,
                message_pb2.MarkConversationReadRequest(
                    user_email=receiver.email, peer_email=sender.email
                ),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (
                "ListNotifications of the receiver",
                notification.ListNotifications,
                notification_pb2.ListNotificationsRequest(email=receiver.email),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (
                "MarkNotificationRead in the receiver's name",
                notification.MarkNotificationRead,
                notification_pb2.MarkNotificationReadRequest(email=receiver.email, id=str(sent.id)),
                grpc.StatusCode.PERMISSION_DENIED,
            ),
            (
                "MarkNotificationRead of the receiver's notification in the outsider's list",
                notification.MarkNotificationRead,
                notification_pb2.MarkNotificationReadRequest(email=outsider.email, id=str(sent.id)),
                grpc.StatusCode.NOT_FOUND,
            ),
        ]
        for what, method, request, code in probes:
            call = functools.partial(
                method, request, metadata=outsider.metadata, timeout=CALL_TIMEOUT
            )
            got = self.live.status(call)
            assert got == code, f"{outsider.email}: {what} gave {got.name}, expected {code.name}"

    @rule(sent=messages)
    @_step
    def mark_notification_read(self, sent: Sent) -> None:
        user = self.users[sent.receiver]
        request = notification_pb2.MarkNotificationReadRequest(email=user.email, id=str(sent.id))

        def mark() -> Awaitable[notification_pb2.Notification]:
            return self.stubs.notification.MarkNotificationRead(
                request, metadata=user.metadata, timeout=CALL_TIMEOUT
            )

        if not sent.notified:
            got = self.live.status(mark)
            assert got == grpc.StatusCode.NOT_FOUND, (
                f"MarkNotificationRead of message {sent.id}, which has no notification, "
                f"gave {got.name}"
            )
            return
        notification = self.live.call(mark)
        assert notification.id == str(sent.id), notification
        assert notification.message_id == sent.id, notification
        assert notification.receiver_email == user.email, notification
        assert notification.sender_email == self.users[sent.sender].email, notification
        assert notification.read, notification
        self.notification_read.add(sent.id)

    @precondition(lambda self: any(s.notified for s in self.sent))
    @rule(who=WHO)
    @_step
    def mark_all_notifications_read(self, who: int) -> None:
        user = self.users[who]
        unread = [i for i in self._due(who) if i not in self.notification_read]
        reply = self.live.call(
            lambda: self.stubs.notification.MarkAllNotificationsRead(
                notification_pb2.MarkAllNotificationsReadRequest(email=user.email),
                metadata=user.metadata,
                timeout=CALL_TIMEOUT,
            )
        )
        assert reply.marked == len(unread), f"marked {reply.marked}, the model had {unread}"
        self.notification_read.update(unread)

    @precondition(lambda self: bool(self.sent))
    @rule(who=WHO, offset=OFFSET)
    @_step
    def mark_conversation_read(self, who: int, offset: int) -> None:
        peer = (who + offset) % USERS
        user, peer_user = self.users[who], self.users[peer]
        request = message_pb2.MarkConversationReadRequest(
            user_email=user.email, peer_email=peer_user.email
        )

        def mark() -> Awaitable[message_pb2.Conversation]:
            return self.stubs.message.MarkConversationRead(
                request, metadata=user.metadata, timeout=CALL_TIMEOUT
            )

        exchanged = self._between(who, peer)
        if not exchanged:
            got = self.live.status(mark)
            assert got == grpc.StatusCode.NOT_FOUND, (
                f"MarkConversationRead without a conversation gave {got.name}"
            )
            return
        conversation = self.live.call(mark)
        self.conversation_read.update(s.id for s in exchanged if s.receiver == who)
        assert conversation.peer_email == peer_user.email, conversation
        assert conversation.unread_count == 0, conversation
        assert conversation.message_count == len(exchanged), conversation
        self._check_message(conversation.last_message, exchanged[0])

    @rule(who=WHO)
    @_step
    def unsubscribe(self, who: int) -> None:
        user = self.users[who]
        reply = self.live.call(
            lambda: self.stubs.notification.UnsubscribeUser(
                notification_pb2.UnsubscribeUserRequest(email=user.email),
                metadata=user.metadata,
                timeout=CALL_TIMEOUT,
            )
        )
        assert reply.email == user.email and not reply.subscribed, reply
        self.subscribed[who] = False

    @precondition(lambda self: not all(self.subscribed))
    @rule(who=WHO)
    @_step
    def subscribe(self, who: int) -> None:
        user = self.users[who]
        reply = self.live.call(
            lambda: self.stubs.notification.SubscribeUser(
                notification_pb2.SubscribeUserRequest(email=user.email),
                metadata=user.metadata,
                timeout=CALL_TIMEOUT,
            )
        )
        assert reply.email == user.email and reply.subscribed, reply
        self.subscribed[who] = True

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def system_agrees_with_the_model(self) -> None:
        observed = self._observe()
        for who, seen in enumerate(observed):
            self._check_subscription(who, seen)
            self._check_notifications(who, seen)
            self._check_conversations(who, seen)
            self._check_membership(who, seen)

    def _check_subscription(self, who: int, seen: Observed) -> None:
        assert seen.subscribed == self.subscribed[who], (
            f"{self.users[who].email}: CheckUserSubscribed says {seen.subscribed}, "
            f"the model {self.subscribed[who]}"
        )

    def _check_notifications(self, who: int, seen: Observed) -> None:
        email = self.users[who].email
        by_id = {s.id: s for s in self.sent}
        listed = [n.message_id for n in seen.notifications]
        assert len(set(listed)) == len(listed), f"{email}: duplicate notifications {listed}"
        for notification in seen.notifications:
            sent = by_id.get(notification.message_id)
            assert sent is not None and sent.receiver == who, (
                f"{email}: notification of a message not sent to them: {notification}"
            )
            assert sent.notified, (
                f"{email}: notification of message {sent.id}, sent while they were unsubscribed"
            )
            assert notification.id == str(sent.id), notification
            assert notification.sender_email == self.users[sent.sender].email, notification
            assert notification.receiver_email == email, notification
            assert _stamp(notification.timestamp) == sent.timestamp, (notification, sent)
            assert notification.read == (sent.id in self.notification_read), (
                f"{email}: notification {notification.id} read={notification.read}, but the "
                f"model says {sent.id in self.notification_read}"
            )
        due = self._due(who)
        assert listed == due, f"{email}: notifications of {listed}, expected {due} (newest first)"
        unread = [i for i in due if i not in self.notification_read]
        assert seen.unread_count == len(unread), (
            f"{email}: unread_count {seen.unread_count}, the model has {len(unread)} unread"
        )
        assert [n.message_id for n in seen.unread] == unread, (
            f"{email}: unread_only lists {[n.message_id for n in seen.unread]}, expected {unread}"
        )
        assert seen.unread_only_count == len(unread), seen.unread_only_count

    def _check_conversations(self, who: int, seen: Observed) -> None:
        email = self.users[who].email
        emails = [user.email for user in self.users]
        expected = sorted(
            (
                (p, self._between(who, p))
                for p in range(USERS)
                if p != who and self._between(who, p)
            ),
            key=lambda item: item[1][0].id,
            reverse=True,
        )
        peers = [c.peer_email for c in seen.conversations]
        assert peers == [emails[p] for p, _ in expected], (
            f"{email}: conversations with {peers}, expected {[emails[p] for p, _ in expected]} "
            "(most recent first)"
        )
        for conversation, (peer, exchanged) in zip(seen.conversations, expected, strict=True):
            assert conversation.message_count == len(exchanged), (
                f"{email} with {emails[peer]}: message_count {conversation.message_count}, "
                f"expected {len(exchanged)}"
            )
            unread = self._unread_from(who, peer)
            assert conversation.unread_count == unread, (
                f"{email} with {emails[peer]}: unread_count {conversation.unread_count}, "
                f"expected {unread}"
            )
            self._check_message(conversation.last_message, exchanged[0])
            assert _stamp(conversation.updated_at) == exchanged[0].timestamp, conversation

    def _check_membership(self, who: int, seen: Observed) -> None:
        email = self.users[who].email
        by_id = {s.id: s for s in self.sent}
        for peer, messages in seen.with_peer.items():
            peer_email = self.users[peer].email
            ids = [m.id for m in messages]
            expected = [s.id for s in self._between(who, peer)]
            assert ids == expected, (
                f"GetMessages({email}, {peer_email}) gave {ids}, expected {expected}"
            )
            for message in messages:
                assert {message.sender_email, message.receiver_email} == {email, peer_email}, (
                    f"GetMessages({email}, {peer_email}) returned {message}"
                )
                self._check_message(message, by_id[message.id])
        ids = [m.id for m in seen.everything]
        expected = sorted((s.id for s in self.sent if who in (s.sender, s.receiver)), reverse=True)
        assert ids == expected, f"GetMessages({email}) gave {ids}, expected {expected}"
        for message in seen.everything:
            assert email in (message.sender_email, message.receiver_email), message
            self._check_message(message, by_id[message.id])


def test_the_whole_chain(live: Live) -> None:
    """The chain every interleaving is built from, once in order, checked after every step:
    register, sign in, send, read, notification listed, mark read, unsubscribe, send (no
    notification), resubscribe, send (notified again)."""
    Workflows.live = live
    machine = Workflows()
    ada, bob, cy = range(USERS)
    to_bob = {ada: 1, cy: 2}
    machine.register_and_sign_in()
    machine.system_agrees_with_the_model()
    machine.sign_in_again(bob, wrong_first=True)
    machine.system_agrees_with_the_model()
    first = machine.send(ada, to_bob[ada], "hello Bob")
    machine.system_agrees_with_the_model()
    machine.get_message(first, as_receiver=True)
    machine.get_message(first, as_receiver=False)
    machine.outsider_is_refused(first)
    machine.system_agrees_with_the_model()
    machine.mark_notification_read(first)
    machine.system_agrees_with_the_model()
    machine.mark_conversation_read(bob, USERS - to_bob[ada])
    machine.system_agrees_with_the_model()
    machine.reply(first, "hi Ada")
    machine.system_agrees_with_the_model()
    machine.unsubscribe(bob)
    machine.system_agrees_with_the_model()
    quiet = machine.send(ada, to_bob[ada], "still there?")
    machine.system_agrees_with_the_model()
    machine.mark_notification_read(quiet)
    machine.system_agrees_with_the_model()
    machine.subscribe(bob)
    machine.system_agrees_with_the_model()
    machine.send(cy, to_bob[cy], "hey Bob")
    machine.system_agrees_with_the_model()
    machine.mark_all_notifications_read(bob)
    machine.system_agrees_with_the_model()
    assert [s.notified for s in machine.sent] == [True, True, False, True], machine.sent
    machine.teardown()


def test_workflows_agree_with_the_model(live: Live) -> None:
    Workflows.live = live
    steps = [f for f in vars(Workflows).values() if hasattr(f, "hypothesis_stateful_rule")]
    REPORT.declare(SUITE, "workflows", [f.__name__ for f in steps])
    run_state_machine_as_test(Workflows, settings=SETTINGS)
