"""Conversion of notifications between the protobuf wire form and the domain form."""

from __future__ import annotations

import logging
from datetime import UTC

from missive.notification.v1 import notification_pb2

from services.common.domain import InvalidArgument
from services.frontend.service import Notification

logger = logging.getLogger(__name__)


def from_proto(message: notification_pb2.Notification) -> Notification:
    """The domain notification; InvalidArgument when its timestamp is out of range."""
    timestamp = None
    if message.HasField("timestamp"):
        try:
            timestamp = message.timestamp.ToDatetime(tzinfo=UTC)
        except ValueError as exc:
            raise InvalidArgument("notification.timestamp is out of range") from exc
    return Notification(
        id=message.id,
        message_id=message.message_id,
        sender_email=message.sender_email,
        receiver_email=message.receiver_email,
        timestamp=timestamp,
        read=message.read,
        preview=message.preview,
        sender_name=message.sender_name,
    )


def to_proto(notification: Notification) -> notification_pb2.Notification:
    """The wire message for ``notification``."""
    message = notification_pb2.Notification(
        id=notification.id,
        message_id=notification.message_id,
        sender_email=notification.sender_email,
        receiver_email=notification.receiver_email,
        read=notification.read,
        preview=notification.preview,
        sender_name=notification.sender_name,
    )
    if notification.timestamp is not None:
        message.timestamp.FromDatetime(notification.timestamp)
    return message
