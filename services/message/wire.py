"""Conversion from the domain values to the protobuf messages of the contract."""

from __future__ import annotations

from missive.message.v1 import message_pb2

from services.common.timestamps import set_proto_timestamp
from services.message.models import Conversation, Message


def message_to_proto(message: Message) -> message_pb2.Message:
    reply = message_pb2.Message(
        id=message.id,
        sender_email=message.sender_email,
        receiver_email=message.receiver_email,
        content=message.content,
        read=message.read,
    )
    set_proto_timestamp(reply.timestamp, message.timestamp)
    return reply


def conversation_to_proto(conversation: Conversation) -> message_pb2.Conversation:
    reply = message_pb2.Conversation(
        peer_email=conversation.peer_email,
        last_message=message_to_proto(conversation.last_message),
        unread_count=conversation.unread_count,
        message_count=conversation.message_count,
    )
    set_proto_timestamp(reply.updated_at, conversation.updated_at)
    return reply
