"""MessageService's stored forms: the JSON of a message and of an idempotency record, the
fields of a conversation hash, and the outbox event of a stored message."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from services.common import json_text
from services.common.timestamps import format_timestamp, parse_timestamp
from services.message.models import Conversation, IdempotencyRecord, Message, MessageEvent

__all__ = [
    "PREVIEW_CHARS",
    "MessageParts",
    "conversation_state",
    "decode_conversation",
    "decode_event",
    "decode_message",
    "decode_record",
    "message_parts",
    "message_tail",
    "outbox_event",
    "parse_many",
    "parts_of",
    "record_tail",
]


# json.dumps with these options builds an encoder per call; the same encoders, built once.
_COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_COMPACT_ASCII: Final = json.JSONEncoder(separators=(",", ":"))


def message_tail(message: Message, timestamp: str | None = None) -> str:
    """The stored JSON of ``message`` after its id: lua.SEND_MESSAGE, which allocates the id,
    prepends ``{"id":<id>,``. The stored JSON holds id, sender_email, receiver_email, content
    and timestamp (not ``read``), compact, with non-ASCII characters as they are.
    ``timestamp``: the message's timestamp already formatted, if the caller has it."""
    return _COMPACT.encode(
        {
            "sender_email": message.sender_email,
            "receiver_email": message.receiver_email,
            "content": message.content,
            "timestamp": timestamp or format_timestamp(message.timestamp),
        }
    )[1:]


MessageParts = tuple[int, str, str, str, datetime]
"""A stored message's id, sender, receiver, content and timestamp (:func:`message_parts`)."""

_TEXT_FIELDS: Final = ("sender_email", "receiver_email", "content", "timestamp")


def message_parts(text: str) -> MessageParts:
    """The fields of the message stored as ``text`` (a Message once its read flag is known:
    ``Message(*parts, read)``); ValueError if it is not one."""
    return parts_of(json_text.loads(text))


def parse_many(texts: Sequence[str]) -> list[Any]:
    """The JSON values of ``texts``, in order, parsed as one array (one call of the parser for
    a whole page); ValueError if any of them is not one JSON value."""
    if not texts:
        return []
    values: list[Any] = json_text.loads("[" + ",".join(texts) + "]")
    if len(values) != len(texts):  # a text that is not one value ("1,2") splits
        raise ValueError("a stored document must be one JSON value")
    return values


def parts_of(data: Any) -> MessageParts:
    """:func:`message_parts` of a parsed document."""
    try:
        mid, sender, receiver = data["id"], data["sender_email"], data["receiver_email"]
        content, timestamp = data["content"], data["timestamp"]
    except (KeyError, TypeError):
        return _checked_parts(data)
    # What a JSON parser gives is exactly int or str (or bool, an int): checked by type.
    if (
        type(mid) is int
        and type(sender) is str
        and type(receiver) is str
        and type(content) is str
        and type(timestamp) is str
    ):
        return mid, sender, receiver, content, parse_timestamp(timestamp)
    return _checked_parts(data)


def _checked_parts(data: Any) -> MessageParts:
    """:func:`parts_of`, each field checked in turn: the ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a stored message must be a JSON object")
    mid = data.get("id")
    if not isinstance(mid, int) or isinstance(mid, bool):
        raise ValueError("a stored message needs an integer id")
    sender, receiver, content, timestamp = (data.get(name) for name in _TEXT_FIELDS)
    if not (
        isinstance(sender, str)
        and isinstance(receiver, str)
        and isinstance(content, str)
        and isinstance(timestamp, str)
    ):
        missing = next(n for n in _TEXT_FIELDS if not isinstance(data.get(n), str))
        raise ValueError(f"a stored message needs a string {missing}")
    return mid, sender, receiver, content, parse_timestamp(timestamp)


def decode_message(text: str, read: bool = False) -> Message:
    """The message stored as ``text``; ValueError if it is not one."""
    return Message(*message_parts(text), read)


def record_tail(receiver: str, content_sha256: str) -> str:
    """The JSON of an idempotency record after its message id (see :func:`message_tail`)."""
    return _COMPACT_ASCII.encode({"receiver": receiver, "content_sha256": content_sha256})[1:]


def decode_record(text: str) -> IdempotencyRecord:
    """The idempotency record stored as ``text``; ValueError if it is not one."""
    data: Any = json_text.loads(text)
    if not isinstance(data, dict):
        raise ValueError("an idempotency record must be a JSON object")
    mid, receiver, digest = data.get("message_id"), data.get("receiver"), data.get("content_sha256")
    if not isinstance(mid, int) or not isinstance(receiver, str) or not isinstance(digest, str):
        raise ValueError("an idempotency record needs message_id, receiver and content_sha256")
    return IdempotencyRecord(mid, receiver, digest)


PREVIEW_CHARS: Final = 100
"""Longest preview of a message's content (and sender name) a notification event carries."""


def outbox_event(
    message: Message,
    receiver_account_id: str = "",
    sender_name: str = "",
    timestamp: str | None = None,
) -> dict[str, str]:
    """Fields of the outbox entry that makes the relay notify the receiver of ``message``.

    It carries a preview of the content (its first PREVIEW_CHARS characters) and the sender's
    display name, so the notification shows them without another call. ``timestamp``: the
    message's timestamp already formatted, if the caller has it.
    """
    event = {
        "message_id": str(message.id),
        "sender_email": message.sender_email,
        "receiver_email": message.receiver_email,
        "timestamp": timestamp or format_timestamp(message.timestamp),
        "preview": message.content[:PREVIEW_CHARS],
    }
    if receiver_account_id:
        event["receiver_account_id"] = receiver_account_id
    if sender_name:
        event["sender_name"] = sender_name[:PREVIEW_CHARS]
    return event


def decode_event(fields: dict[str, str]) -> MessageEvent:
    """The event an outbox entry carries; ValueError if the entry is malformed."""
    try:
        raw_id, sender = fields["message_id"], fields["sender_email"]
        receiver, timestamp = fields["receiver_email"], fields["timestamp"]
    except KeyError as exc:
        raise ValueError(f"the outbox entry has no {exc.args[0]!r} field") from None
    if not raw_id.isdigit():
        raise ValueError(f"message_id {raw_id!r} is not a positive integer")
    return MessageEvent(
        int(raw_id),
        sender,
        receiver,
        parse_timestamp(timestamp),
        fields.get("receiver_account_id", ""),
        fields.get("preview", "")[:PREVIEW_CHARS],
        fields.get("sender_name", "")[:PREVIEW_CHARS],
    )


def conversation_state(me: str, peer: str) -> tuple[str, ...]:
    """The fields of a conversation hash that :func:`decode_conversation` reads for ``me``, in
    its order (lua_snippets.py's load_conversation reads the same with HMGET)."""
    return ("message_count", "updated_at", f"unread:{me}", f"read_upto:{me}", f"read_upto:{peer}")


def decode_conversation(
    me: str, peer: str, state: Sequence[str | None], last: str | MessageParts
) -> Conversation:
    """A conversation seen by ``me`` from its hash's :func:`conversation_state` values (None
    where unset) and its last message (its stored JSON, or its :func:`message_parts`);
    ValueError if corrupt."""
    count, updated_at, unread, upto_me, upto_peer = state
    parts = message_parts(last) if isinstance(last, str) else last
    mid, sender, receiver = parts[0], parts[1], parts[2]
    if sender == peer and receiver == me:
        upto = upto_me
    elif sender == me and receiver == peer:
        upto = upto_peer
    else:
        raise ValueError(f"message {mid} does not belong to the conversation")
    if count is None or updated_at is None:
        raise ValueError("the conversation has no message_count or updated_at")
    return Conversation(
        peer_email=peer,
        last_message=Message(*parts, mid <= int(upto or 0)),
        unread_count=max(0, int(unread or 0)),
        message_count=int(count),
        updated_at=parse_timestamp(updated_at),
    )
