"""Generated replies (gRPC messages, REST models) as the SDK's dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from missive_client._errors import ServerError, Unauthenticated
from missive_client._generated.grpc.missive.notification import v1 as notification_pb
from missive_client._models import Conversation, Message, Notification, Subscription, Token
from missive_client._models import User as UserModel
from missive_client._session import token_from_string


def when(value: datetime | None, what: str) -> datetime:
    if value is None:
        raise ServerError(f"the server's reply lacks {what}")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def user(reply: Any) -> UserModel:
    return UserModel(
        name=reply.name,
        email=reply.email,
        created_at=when(reply.created_at, "created_at"),
        updated_at=when(reply.updated_at, "updated_at"),
    )


def message(reply: Any) -> Message:
    if reply is None:
        raise ServerError("the server's reply lacks the message")
    return Message(
        id=int(reply.id),
        sender_email=reply.sender_email,
        receiver_email=reply.receiver_email,
        content=reply.content,
        timestamp=when(reply.timestamp, "timestamp"),
        read=bool(reply.read),
    )


def conversation(reply: Any) -> Conversation:
    return Conversation(
        peer_email=reply.peer_email,
        last_message=message(reply.last_message),
        unread_count=int(reply.unread_count),
        message_count=int(reply.message_count),
        updated_at=when(reply.updated_at, "updated_at"),
    )


def notification(reply: Any) -> Notification:
    return Notification(
        id=str(reply.id),
        message_id=int(reply.message_id),
        sender_email=reply.sender_email,
        receiver_email=reply.receiver_email,
        timestamp=when(reply.timestamp, "timestamp"),
        read=bool(reply.read),
        preview=str(getattr(reply, "preview", "") or ""),
        sender_name=str(getattr(reply, "sender_name", "") or ""),
    )


def notification_from_grpc(reply: notification_pb.Notification) -> Notification:
    """A streamed notification as the SDK's dataclass."""
    return notification(reply)


def subscription(reply: Any) -> Subscription:
    return Subscription(email=reply.email, subscribed=bool(reply.subscribed))


def nothing(_reply: Any) -> None:
    return None


def token(email: str) -> Callable[[Any], Token]:
    def convert(reply: Any) -> Token:
        if not getattr(reply, "authenticated", False) or not reply.access_token:
            raise Unauthenticated("invalid email or password")
        found = token_from_string(reply.access_token, email.strip().lower())
        assert found is not None  # an email was given
        expires_at = when(reply.expires_at, "expires_at")
        return Token(found.email, reply.access_token, "Bearer", expires_at)

    return convert
