"""MessageService REST adapter: Connexion operations to domain calls and back."""

from __future__ import annotations

from missive.rest._runtime import TokenInfo
from missive.rest.message import MessageApi, create_app
from missive.rest.message.models import Conversation as ConversationBody
from missive.rest.message.models import (
    ConversationList,
    MarkReadRequest,
    MessageList,
    SendMessageRequest,
)
from missive.rest.message.models import Message as MessageBody

from services.common.rest_adapter import RestAdapter, rest_app_factory
from services.common.rest_edge import (
    own_email,
    principal,
)
from services.common.timestamps import format_timestamp
from services.message.models import Conversation, Message
from services.message.service import MessageService

# The caller's email is the `email` parameter (or body field) in the REST contract.
_USER_FIELD = "email"


def message_body(message: Message) -> MessageBody:
    return {
        "id": message.id,
        "sender_email": message.sender_email,
        "receiver_email": message.receiver_email,
        "content": message.content,
        "timestamp": format_timestamp(message.timestamp),
        "read": message.read,
    }


def conversation_body(conversation: Conversation) -> ConversationBody:
    return {
        "peer_email": conversation.peer_email,
        "last_message": message_body(conversation.last_message),
        "unread_count": conversation.unread_count,
        "message_count": conversation.message_count,
        "updated_at": format_timestamp(conversation.updated_at),
    }


class MessageRestApi(RestAdapter[MessageService], MessageApi):
    """Implements every operation of openapi/message.yaml over :class:`MessageService`."""

    async def list_conversations(
        self,
        *,
        token_info: TokenInfo,
        email: str | None = None,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> ConversationList:
        page = await self._service.list_conversations(
            principal(token_info),
            own_email(token_info, email),
            page_size,
            page_token,
            user_field=_USER_FIELD,
        )
        return {
            "conversations": [conversation_body(c) for c in page.conversations],
            "next_page_token": page.next_page_token,
        }

    async def get_messages(
        self,
        *,
        token_info: TokenInfo,
        email: str | None = None,
        peer_email: str | None = None,
        page_size: int = 50,
        page_token: str | None = None,
    ) -> MessageList:
        page = await self._service.get_messages(
            principal(token_info),
            own_email(token_info, email),
            peer_email,
            page_size,
            page_token,
            user_field=_USER_FIELD,
        )
        return {
            "messages": [message_body(m) for m in page.messages],
            "next_page_token": page.next_page_token,
        }

    async def send_message(self, *, token_info: TokenInfo, body: SendMessageRequest) -> MessageBody:
        message = await self._service.send(
            principal(token_info),
            sender_email=body["sender_email"],
            receiver_email=body["receiver_email"],
            content=body["content"],
            client_request_id=body.get("client_request_id"),
        )
        return message_body(message)

    async def get_message(
        self, *, token_info: TokenInfo, id: int, email: str | None = None
    ) -> MessageBody:
        message = await self._service.get_message(
            principal(token_info), own_email(token_info, email), id, user_field=_USER_FIELD
        )
        return message_body(message)

    async def delete_message(
        self, *, token_info: TokenInfo, id: int, email: str | None = None
    ) -> None:
        await self._service.delete(
            principal(token_info), own_email(token_info, email), id, user_field=_USER_FIELD
        )

    async def mark_conversation_read(
        self, *, token_info: TokenInfo, body: MarkReadRequest, peer_email: str
    ) -> ConversationBody:
        conversation = await self._service.mark_read(
            principal(token_info), body["email"], peer_email, user_field=_USER_FIELD
        )
        return conversation_body(conversation)


create_rest_app = rest_app_factory(MessageRestApi, create_app)
"""The Connexion app serving openapi/message.yaml, with the shared edge."""
