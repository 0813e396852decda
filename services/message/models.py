"""Domain values of MessageService, free of transport and storage imports."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol


class Message(NamedTuple):
    """A stored message; ``read`` is True once the receiver has read it.

    Message and Conversation are named tuples (immutable, like the frozen dataclasses of the
    other values): a page builds one of each per item, at a third of a dataclass's cost."""

    id: int
    sender_email: str
    receiver_email: str
    content: str
    timestamp: datetime  # aware, UTC
    read: bool = False

    def involves(self, email: str) -> bool:
        return email in (self.sender_email, self.receiver_email)


class Conversation(NamedTuple):
    """The exchange between two users, seen by one of them (``peer_email`` is the other)."""

    peer_email: str
    last_message: Message
    unread_count: int
    message_count: int
    updated_at: datetime  # aware, UTC


@dataclass(frozen=True)
class IdempotencyRecord:
    """What a sender's client_request_id was first used for."""

    message_id: int
    receiver: str
    content_sha256: str

    def matches(self, receiver: str, content_sha256: str) -> bool:
        return self.receiver == receiver and self.content_sha256 == content_sha256


@dataclass(frozen=True)
class SendOutcome:
    """What one store-side send did (RedisMessageStore.send_message). ``outcome`` is one of
    ``stored`` (``message`` is set), ``duplicate`` (``existing``: the request id was used
    already; nothing written), ``stale`` (the sender's account was deleted), ``erase``
    (``erase_email`` holds data of an earlier account: claim it, then send again), ``rate``
    (``retry_after`` seconds left in the window), ``quota`` (``quota_used`` bytes stored) or
    ``taken`` (no free id: the counter went back). Only ``stored`` wrote anything, besides the
    rate-limit hit of ``rate``, ``quota`` and ``taken``."""

    outcome: str
    message: Message | None = None
    existing: IdempotencyRecord | None = None
    erase_email: str = ""
    retry_after: int = 0
    quota_used: int = 0


@dataclass(frozen=True)
class MessagePage:
    """One page of messages, newest first."""

    messages: list[Message]
    next_page_token: str


@dataclass(frozen=True)
class ConversationPage:
    """One page of conversations, most recent first."""

    conversations: list[Conversation]
    next_page_token: str


def content_digest(content: str) -> str:
    """Hex SHA-256 of the UTF-8 content: compares idempotent retries without storing text."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MessageEvent:
    """The outbox event of a stored message: what NotificationService is told about it."""

    message_id: int
    sender_email: str
    receiver_email: str
    timestamp: datetime  # aware, UTC
    receiver_account_id: str = ""  # the receiver's account when the message was sent
    preview: str = ""  # the start of the content (empty in events recorded before previews)
    sender_name: str = ""  # the sender's display name when the message was sent, if known


@dataclass(frozen=True)
class SendOptions:
    """The keyword arguments of :meth:`MessageSender.send_message`, as a store's ``_send``
    gets them."""

    request_id: str | None = None
    content_sha256: str = ""
    sender_account_id: str = ""
    receiver_account_id: str = ""
    claim_receiver: bool = False
    sender_name: str = ""
    rate_limit: tuple[int, int] | None = None


class MessageSender(Protocol):
    """The send of a message store, one signature for both layouts: a store subclasses this
    and implements ``_send`` (the service's MessageStore protocol includes it)."""

    async def send_message(
        self,
        sender: str,
        receiver: str,
        content: str,
        timestamp: datetime,
        *,
        request_id: str | None = None,
        content_sha256: str = "",
        sender_account_id: str = "",
        receiver_account_id: str = "",
        claim_receiver: bool = False,
        sender_name: str = "",
        rate_limit: tuple[int, int] | None = None,
    ) -> SendOutcome:
        """Store a message from ``sender`` to ``receiver``: with ``request_id`` (and the
        ``content_sha256`` of the request) idempotent; the sender's data claimed for
        ``sender_account_id`` and, with ``claim_receiver``, the receiver's for
        ``receiver_account_id``; one hit on the sender's rate limit (``rate_limit`` =
        (messages, window seconds)); ``sender_name`` in the outbox event."""
        options = SendOptions(
            request_id,
            content_sha256,
            sender_account_id,
            receiver_account_id,
            claim_receiver,
            sender_name,
            rate_limit,
        )
        return await self._send(sender, receiver, content, timestamp, options)

    async def _send(
        self, sender: str, receiver: str, content: str, timestamp: datetime, options: SendOptions
    ) -> SendOutcome:
        """The layout's send."""
        ...
