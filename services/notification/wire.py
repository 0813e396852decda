"""Conversion between the protobuf messages of the contract and the domain values."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from missive.notification.v1 import notification_pb2

from services.common.domain import InvalidArgument
from services.common.timestamps import set_proto_timestamp
from services.notification.models import Notification, SubscriptionStatus


def timestamp_from_proto(message: Timestamp, field: str = "timestamp") -> datetime:
    """The aware UTC datetime of a Timestamp; InvalidArgument naming ``field`` if out of range."""
    try:
        return message.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"{field} is out of range") from exc


def notification_from_proto(message: notification_pb2.Notification) -> Notification:
    """The notification a wire message carries (as FrontendService receives and replays them);
    InvalidArgument when its timestamp is unset or out of range."""
    if not message.HasField("timestamp"):
        raise InvalidArgument("notification.timestamp is required")
    return Notification(
        id=message.id,
        message_id=message.message_id,
        sender_email=message.sender_email,
        receiver_email=message.receiver_email,
        timestamp=timestamp_from_proto(message.timestamp, "notification.timestamp"),
        read=message.read,
        preview=message.preview,
        sender_name=message.sender_name,
    )


def notification_to_proto(notification: Notification) -> notification_pb2.Notification:
    message = notification_pb2.Notification(
        id=notification.id,
        message_id=notification.message_id,
        sender_email=notification.sender_email,
        receiver_email=notification.receiver_email,
        read=notification.read,
        preview=notification.preview,
        sender_name=notification.sender_name,
    )
    set_proto_timestamp(message.timestamp, notification.timestamp)
    return message


def status_to_proto(status: SubscriptionStatus) -> notification_pb2.SubscriptionStatus:
    return notification_pb2.SubscriptionStatus(email=status.email, subscribed=status.subscribed)
