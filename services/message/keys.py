"""MessageService's Redis key names (DB 1), built in one place from normalised emails and ids.

This is the standalone layout; on a Valkey/Redis Cluster the service uses the layout of
services.message.cluster_keys instead.

Every email passed here was normalised first (services.common.emails), so it holds no ':' or
glob character and a key can be split back into its parts.
"""

from __future__ import annotations

from typing import Final

MESSAGE_ID_COUNTER: Final = "message_id_counter"
OUTBOX_STREAM: Final = "outbox:notifications"
OUTBOX_DEAD_LETTER_STREAM: Final = "outbox:notifications:dead"
CONVERSATION_PREFIX: Final = "conversation:"
MESSAGE_PREFIX: Final = "message:"
"""The read scripts append an id (or two sorted emails) to these prefixes themselves."""


def message_key(message_id: int) -> str:
    """JSON of one message."""
    return f"{MESSAGE_PREFIX}{message_id}"


def conversation_key(first: str, second: str) -> str:
    """Hash of a conversation's metadata; the two emails in sorted order (A→B = B→A)."""
    a, b = sorted((first, second))
    return f"{CONVERSATION_PREFIX}{a}:{b}"


def conversation_messages_key(first: str, second: str) -> str:
    """Sorted set of a conversation's message ids (score = id)."""
    return conversation_key(first, second) + ":messages"


def user_conversations_key(email: str) -> str:
    """Set of the conversation keys the user takes part in."""
    return f"user:{email}:conversations"


def user_conversations_by_time_key(email: str) -> str:
    """Sorted set: conversation key → id of the last message sent in it (most recent last)."""
    return f"user:{email}:conversations_by_time"


def user_messages_key(email: str) -> str:
    """Sorted set of the ids of every message the user sent or received (score = id)."""
    return f"user:{email}:messages"


def account_key(email: str) -> str:
    """The id of the account that owns the data keyed by ``email`` here (``{id}:erased`` once
    that account was deleted and its data erased)."""
    return f"account:{email}"


def stored_bytes_key(email: str) -> str:
    """Bytes of the messages ``email`` sent that are still stored (the sender's quota)."""
    return f"user:{email}:stored_bytes"


def send_rate_key(email: str) -> str:
    """Messages ``email`` sent in the current rate-limit window (expires with it)."""
    return f"send_rate:{email}"


def idempotency_key(sender: str, client_request_id: str) -> str:
    """The record of what ``sender`` first sent with ``client_request_id`` (expires)."""
    return f"idempotency:send:{sender}:{client_request_id}"


def peer_in(conversation: str, email: str) -> str:
    """The other participant of ``conversation`` (a conversation key), seen by ``email``."""
    if not conversation.startswith(CONVERSATION_PREFIX):
        raise ValueError(f"{conversation!r} is not a conversation key")
    a, sep, b = conversation.removeprefix(CONVERSATION_PREFIX).partition(":")
    if not sep or email not in (a, b):
        raise ValueError(f"{email} is not a participant of {conversation!r}")
    return b if a == email else a
