"""The checker: Jepsen's total-queue semantics over messages, stored notifications and streams.

Run after every fault has healed and the system has drained (every stream group has read and
acknowledged everything). For each of the three levels:

* **lost**: acknowledged (``ok``) but absent. Must be 0.
* **duplicated**: present more often than once (one message per operation, one notification
  per message, one yield of a notification id per stream connection). Must be 0.
* **unexpected**: present but never asked for (no such nonce, a ``fail`` operation, another
  user's notification on a stream). Must be 0.

``info`` operations that did happen are *recovered*: allowed, but each must be complete
(message, conversation, both users' indexes, and its notification) - no partial writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.helpers.chaos.history import History, Outcome, SendOp
from tests.helpers.chaos.store import Snapshot, StoredMessage, StoredNotification
from tests.helpers.chaos.streams import LiveStream

_EXAMPLES = 5


@dataclass
class Figures:
    """lost / duplicated / unexpected at one level, with a few examples of each."""

    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, kind: str, what: str, count: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + count)
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"{kind}: {what}")

    def add(self, other: Figures) -> None:
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.unexpected += other.unexpected
        self.examples.extend(other.examples[: max(0, _EXAMPLES - len(self.examples))])

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.unexpected == 0

    def __str__(self) -> str:
        return f"lost {self.lost}, duplicated {self.duplicated}, unexpected {self.unexpected}"


@dataclass
class Check:
    """What the checker found in one snapshot."""

    messages: Figures = field(default_factory=Figures)
    notifications: Figures = field(default_factory=Figures)
    streams: Figures = field(default_factory=Figures)
    per_stream: dict[str, Figures] = field(default_factory=dict)
    recovered: int = 0
    allowed_lost: int = 0  # ok operations absent inside a stated durability window
    incomplete: list[str] = field(default_factory=list)  # partial writes
    invariants: list[str] = field(default_factory=list)  # structural violations

    @property
    def converged(self) -> bool:
        """Every acknowledged message, its notification and every stream are complete."""
        return self.messages.lost == 0 and self.notifications.lost == 0 and self.streams.lost == 0


def _conversation(message: StoredMessage) -> str:
    a, b = sorted((message.sender, message.receiver))
    return f"conversation:{a}:{b}"


def check(
    history: History,
    snap: Snapshot,
    streams: Sequence[LiveStream] = (),
    *,
    allow_lost: Callable[[SendOp], bool] | None = None,
) -> Check:
    """Compare the history (and the streams' records) with what is stored."""
    checker = _Checker(history, snap, allow_lost)
    checker.messages()
    checker.completeness()
    checker.structure()
    checker.notifications()
    for stream in streams:
        checker.stream(stream)
    return checker.result


class _Checker:
    """One run of :func:`check`: the history and snapshot, and what was found so far."""

    def __init__(
        self, history: History, snap: Snapshot, allow_lost: Callable[[SendOp], bool] | None
    ) -> None:
        self.history = history
        self.snap = snap
        self.allow_lost = allow_lost
        self.result = Check()
        self.expected_messages: dict[int, StoredMessage] = {}  # of ok / recovered operations
        self.excused: set[int] = set()  # ids a stream may show although absent (durability)

    # -- messages ---------------------------------------------------------------------------
    def messages(self) -> None:
        stored_by_nonce: dict[str, list[StoredMessage]] = {}
        for message in self.snap.messages.values():
            if message.nonce is not None:
                stored_by_nonce.setdefault(message.nonce, []).append(message)
        for op in self.history.ops:
            self._operation(op, stored_by_nonce.get(op.nonce, []))
        ops_by_nonce = {op.nonce: op for op in self.history.ops}
        for message in self.snap.messages.values():
            if message.nonce not in ops_by_nonce:
                self.result.messages.note(
                    "unexpected", f"message {message.id} with text never sent"
                )

    def _operation(self, op: SendOp, stored: list[StoredMessage]) -> None:
        m = self.result.messages
        if len(stored) > 1:
            m.note(
                "duplicated",
                f"op {op.index} stored as {sorted(s.id for s in stored)}",
                len(stored) - 1,
            )
        if op.outcome == Outcome.OK:
            self._acknowledged(op, stored)
        elif op.outcome == Outcome.FAIL and stored:
            m.note("unexpected", f"op {op.index} failed ({op.code}) yet stored {stored[0].id}")
            return
        elif stored:
            self.result.recovered += 1
        for message in stored:
            self.expected_messages[message.id] = message
            if (message.sender, message.receiver) != (op.sender, op.receiver):
                self.result.invariants.append(
                    f"message {message.id}: sender/receiver differ from op"
                )

    def _acknowledged(self, op: SendOp, stored: list[StoredMessage]) -> None:
        if not stored:
            if self.allow_lost is not None and self.allow_lost(op):
                self.result.allowed_lost += 1
                if op.message_id is not None:
                    self.excused.add(op.message_id)
            else:
                self.result.messages.note(
                    "lost", f"op {op.index} (message {op.message_id}, {op.code})"
                )
        elif op.message_id not in {s.id for s in stored}:
            self.result.invariants.append(
                f"op {op.index} was acknowledged as message {op.message_id} "
                f"but its text is stored as {sorted(s.id for s in stored)}"
            )

    # -- completeness and structure ----------------------------------------------------------
    def completeness(self) -> None:
        snap = self.snap
        for message in self.expected_messages.values():
            conversation = _conversation(message)
            sender, receiver = message.sender, message.receiver
            missing = [
                what
                for what, present in (
                    ("conversation", conversation in snap.conversations),
                    (
                        "conversation index",
                        message.id in snap.conversation_messages.get(conversation, set()),
                    ),
                    ("sender index", message.id in snap.user_messages.get(sender, set())),
                    ("receiver index", message.id in snap.user_messages.get(receiver, set())),
                    (
                        "sender's conversations",
                        conversation in snap.user_conversations.get(sender, set()),
                    ),
                    (
                        "receiver's conversations",
                        conversation in snap.user_conversations.get(receiver, set()),
                    ),
                )
                if not present
            ]
            if missing:
                self.result.incomplete.append(f"message {message.id} lacks {', '.join(missing)}")

    def structure(self) -> None:
        snap, invariants = self.snap, self.result.invariants
        for conversation, ids in snap.conversation_messages.items():
            for mid in sorted(ids - snap.messages.keys())[:_EXAMPLES]:
                invariants.append(f"{conversation} lists message {mid}, which does not exist")
            if conversation not in snap.conversations:
                invariants.append(f"{conversation} has messages but no conversation hash")
        for email, conversations in snap.user_conversations.items():
            for conversation in sorted(conversations - snap.conversations)[:_EXAMPLES]:
                invariants.append(f"{email} lists {conversation}, which does not exist")

    # -- stored notifications ------------------------------------------------------------------
    def notifications(self) -> None:
        n = self.result.notifications
        by_message: dict[int, list[str]] = {}
        for notification in self.snap.notifications:
            by_message.setdefault(notification.message_id, []).append(notification.id)
            self._notification_target(notification)
        for mid in self.expected_messages:
            count = len(by_message.get(mid, []))
            if count == 0:
                n.note("lost", f"message {mid} has no notification")
            elif count > 1:
                n.note("duplicated", f"message {mid} has {count} notifications", count - 1)
        for nid, count in Counter(x.id for x in self.snap.notifications).items():
            if count > 1:
                n.note("duplicated", f"notification id {nid} stored {count} times", count - 1)

    def _notification_target(self, notification: StoredNotification) -> None:
        n = self.result.notifications
        of = self.expected_messages.get(notification.message_id)
        if of is None:
            if notification.message_id not in self.excused:
                n.note(
                    "unexpected",
                    f"notification {notification.id} of unknown message {notification.message_id}",
                )
        elif not of.receiver == notification.listed_for == notification.receiver:
            n.note(
                "unexpected",
                f"notification {notification.id} listed for {notification.listed_for}, "
                f"message {of.id} is for {of.receiver}",
            )

    # -- live streams --------------------------------------------------------------------------
    def stream(self, stream: LiveStream) -> None:
        figures = Figures()
        mine = self.snap.notifications_of(stream.email)
        stored_ids = {x.id for x in mine}
        expected_ids = {x.id for x in mine if x.message_id in self.expected_messages}
        for nid in sorted(expected_ids - stream.first_seen.keys()):
            figures.note("lost", f"{stream.email}: notification {nid}")
        for index, connection in enumerate(stream.connections):
            for nid, count in connection.repeats().items():
                figures.note(
                    "duplicated", f"{stream.email}: {nid} x{count} on connection {index}", count - 1
                )
        for nid in sorted(stream.first_seen.keys() - stored_ids):
            if stream.message_of.get(nid) not in self.excused:
                figures.note(
                    "unexpected",
                    f"{stream.email}: notification {nid} (message {stream.message_of.get(nid)})",
                )
        self.result.per_stream[stream.email] = figures
        self.result.streams.add(figures)
