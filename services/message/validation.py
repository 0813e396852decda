"""MessageService's checks of its input: emails, content, client request ids and message ids.

Each raises InvalidArgument naming the field and what it must be; the service calls them
before anything is read or written.
"""

from __future__ import annotations

import re
from typing import Final

from services.common.domain import InvalidArgument
from services.common.emails import normalise_email

__all__ = [
    "MAX_CONTENT_CHARS",
    "MAX_MESSAGE_ID",
    "check_content",
    "check_id",
    "email",
    "request_id",
]

MAX_CONTENT_CHARS: Final = 4096
MAX_MESSAGE_ID: Final = 2**63 - 1
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


def email(raw: str, field: str) -> str:
    """``raw`` normalised (services.common.emails), named ``field`` in the error."""
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON body
        raise InvalidArgument(f"{field} is not a valid email address") from None
    return normalise_email(raw, field)


def check_content(content: str) -> None:
    """Content is stored exactly as sent: 1 to 4096 code points, no trimming."""
    if not content:
        raise InvalidArgument(f"content is required (1 to {MAX_CONTENT_CHARS} characters)")
    if len(content) > MAX_CONTENT_CHARS:
        raise InvalidArgument(
            f"content is too long ({len(content)} characters; the maximum is {MAX_CONTENT_CHARS})"
        )
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("content is not valid Unicode text") from None


def request_id(raw: str | None) -> str | None:
    """A client_request_id, or None when none was given."""
    if not raw:
        return None
    if not _REQUEST_ID.fullmatch(raw):
        raise InvalidArgument("client_request_id must be 1 to 64 characters of [A-Za-z0-9_-]")
    return raw


def check_id(message_id: int) -> None:
    if not 1 <= message_id <= MAX_MESSAGE_ID:
        raise InvalidArgument(f"id must be at least 1, got {message_id}")
