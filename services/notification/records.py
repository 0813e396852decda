"""NotificationService's stored forms: the JSON of a notification (keys in a fixed order, ``id``
first and ``read`` last, as the Lua scripts rely on) and the outbox event of a push."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.common import json_text
from services.common.timestamps import format_timestamp, parse_timestamp
from services.notification.models import Notification

__all__ = [
    "decode_event",
    "decode_notification",
    "decode_notifications",
    "encode_notification",
    "outbox_event",
]


def encode_notification(notification: Notification) -> str:
    """The stored JSON: keys in this fixed order (the Lua scripts rely on ``id`` and ``read``)."""
    return json.dumps(
        {
            "id": notification.id,
            "message_id": notification.message_id,
            "sender_email": notification.sender_email,
            "receiver_email": notification.receiver_email,
            "timestamp": format_timestamp(notification.timestamp),
            "preview": notification.preview,
            "sender_name": notification.sender_name,
            "read": notification.read,
        },
        separators=(",", ":"),
    )


def decode_notification(text: str) -> Notification:
    """The notification stored as ``text``; ValueError if it is not one."""
    return _notification_of(json_text.loads(text))


def decode_notifications(texts: Sequence[str]) -> list[Notification]:
    """The notifications stored as ``texts``, in order, parsed as one JSON array (one call
    of the parser for a whole page); ValueError if any of them is not one."""
    if not texts:
        return []
    data: Any = json_text.loads("[" + ",".join(texts) + "]")
    if len(data) != len(texts):  # an item that is not one JSON value ("1,2") splits
        raise ValueError("a stored notification must be one JSON object")
    return [_notification_of(item) for item in data]


def _notification_of(data: Any) -> Notification:
    if not isinstance(data, dict):
        raise ValueError("a stored notification must be a JSON object")
    nid, message_id, read = data.get("id"), data.get("message_id"), data.get("read")
    sender, receiver, timestamp = (
        data.get("sender_email"),
        data.get("receiver_email"),
        data.get("timestamp"),
    )
    if not (isinstance(nid, str) and isinstance(message_id, int) and isinstance(read, bool)):
        raise ValueError("a stored notification needs a string id, an int message_id, a bool read")
    if not (isinstance(sender, str) and isinstance(receiver, str) and isinstance(timestamp, str)):
        raise ValueError("a stored notification needs string emails and timestamp")
    preview, sender_name = data.get("preview", ""), data.get("sender_name", "")
    if not (isinstance(preview, str) and isinstance(sender_name, str)):
        raise ValueError("a stored notification's preview and sender_name must be strings")
    return Notification(
        nid,
        message_id,
        sender,
        receiver,
        parse_timestamp(timestamp),
        read,
        preview=preview,
        sender_name=sender_name,
    )


def outbox_event(
    notification: Notification, encoded: str, receiver_account_id: str = ""
) -> dict[str, str]:
    """Fields of the outbox entry that makes the relay push ``notification`` to the frontend."""
    event = {
        "id": notification.id,
        "message_id": str(notification.message_id),
        "receiver_email": notification.receiver_email,
        "notification": encoded,
    }
    if receiver_account_id:
        event["receiver_account_id"] = receiver_account_id
    return event


def decode_event(fields: dict[str, str]) -> Notification:
    """The notification an outbox entry carries; ValueError if the entry is malformed."""
    encoded = fields.get("notification")
    if encoded is None:
        raise ValueError("the outbox entry has no 'notification' field")
    notification = decode_notification(encoded)
    if fields.get("id", notification.id) != notification.id:
        raise ValueError("the outbox entry's id differs from its notification's id")
    return notification
