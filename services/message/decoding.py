"""Decoding of what MessageService's scripts return (services.message.lua and cluster_lua):
messages with their read flags, conversations, hashes and scores, for both store layouts.
Malformed entries are skipped and logged, never fatal to a page."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from services.message.models import Conversation, Message
from services.message.records import decode_conversation, message_parts, parse_many, parts_of

__all__ = [
    "conversation_of",
    "decode_conversations",
    "decode_messages",
    "position",
    "text",
]

logger = logging.getLogger(__name__)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def position(score: Any) -> int:
    """A sorted-set score read back as the integer it holds (ids are exact below 2^53)."""
    return int(float(score))


def decode_messages(ids: Sequence[int], loaded: Sequence[Any]) -> list[Message]:
    """The messages of the lua.MESSAGES / MESSAGE_PAGE reply for ``ids``, read flags set;
    missing and malformed ones skipped."""
    found: list[Message] = []
    for message_id, stored, upto in zip(ids, loaded[0::2], loaded[1::2], strict=True):
        if stored is None:
            continue  # an index entry without its message
        try:
            parts = message_parts(text(stored))
        except ValueError as exc:
            logger.warning("skipping malformed message %s: %s", message_id, exc)
            continue
        found.append(Message(*parts, parts[0] <= int(upto or 0)))
    return found


def decode_conversations(
    email: str, peers: Sequence[str], loaded: Sequence[Any]
) -> list[Conversation]:
    """:func:`conversation_of` of each peer's load_conversation reply, in order, the
    last messages parsed together (each on its own should one of them not parse)."""
    lasts: list[Any] = [item[5] if item else None for item in loaded]
    parsed: Sequence[Any] = lasts
    if all(type(last) is str for last in lasts):
        try:
            parsed = [parts_of(data) for data in parse_many(lasts)]
        except ValueError:
            pass
    return [
        conversation
        for peer, item, last in zip(peers, loaded, parsed, strict=True)
        if (conversation := conversation_of(email, peer, item, last)) is not None
    ]


def conversation_of(
    email: str, peer: str, loaded: Sequence[Any] | None, last: Any = None
) -> Conversation | None:
    """The conversation of a load_conversation reply (lua_snippets.py), or None if it has no
    message left (or is malformed: logged). ``last``: its last message, parsed, if it was
    already."""
    if not loaded:
        return None
    if last is None:
        last = loaded[5]
    if last is None:
        logger.warning("conversation of %s/%s has no readable last message", email, peer)
        return None
    try:
        return decode_conversation(
            email, peer, loaded[:5], last if isinstance(last, tuple) else text(last)
        )
    except ValueError as exc:
        logger.warning("skipping malformed conversation of %s/%s: %s", email, peer, exc)
        return None
