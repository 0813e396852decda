"""MessageService gRPC adapter: protobuf requests to domain calls and back."""

from __future__ import annotations

from collections.abc import Sequence

import grpc.aio
from google.protobuf import empty_pb2
from missive.message.v1 import message_pb2, message_pb2_grpc

from services.common.dead_letters import AdminRpcs, DeadLetterRpcs, DeadLetters
from services.common.grpc_edge import Context, caller
from services.message.service import MessageService
from services.message.wire import conversation_to_proto, message_to_proto

SERVICE_NAME: str = message_pb2.DESCRIPTOR.services_by_name["MessageService"].full_name


class MessageServicer(DeadLetterRpcs, message_pb2_grpc.MessageServiceServicer):
    """Implements missive.message.v1.MessageService over :class:`MessageService`."""

    def __init__(self, service: MessageService, dead_letters: DeadLetters | None = None) -> None:
        self._service = service
        self._admin = AdminRpcs(dead_letters, message_pb2)

    async def SendMessage(
        self, request: message_pb2.SendMessageRequest, context: Context
    ) -> message_pb2.SendMessageResponse:
        message = await self._service.send(
            caller(),
            sender_email=request.sender_email,
            receiver_email=request.receiver_email,
            content=request.content,
            client_request_id=request.client_request_id,
        )
        return message_pb2.SendMessageResponse(message=message_to_proto(message))

    async def GetMessages(
        self, request: message_pb2.GetMessagesRequest, context: Context
    ) -> message_pb2.GetMessagesResponse:
        page = await self._service.get_messages(
            caller(),
            request.user_email,
            request.peer_email,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return message_pb2.GetMessagesResponse(
            messages=[message_to_proto(m) for m in page.messages],
            next_page_token=page.next_page_token,
        )

    async def GetMessage(
        self, request: message_pb2.GetMessageRequest, context: Context
    ) -> message_pb2.Message:
        message = await self._service.get_message(caller(), request.user_email, request.id)
        return message_to_proto(message)

    async def ListConversations(
        self, request: message_pb2.ListConversationsRequest, context: Context
    ) -> message_pb2.ListConversationsResponse:
        page = await self._service.list_conversations(
            caller(), request.user_email, page_size=request.page_size, page_token=request.page_token
        )
        return message_pb2.ListConversationsResponse(
            conversations=[conversation_to_proto(c) for c in page.conversations],
            next_page_token=page.next_page_token,
        )

    async def MarkConversationRead(
        self, request: message_pb2.MarkConversationReadRequest, context: Context
    ) -> message_pb2.Conversation:
        conversation = await self._service.mark_read(
            caller(), request.user_email, request.peer_email
        )
        return conversation_to_proto(conversation)

    async def DeleteMessage(
        self, request: message_pb2.DeleteMessageRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete(caller(), request.user_email, request.id)
        return empty_pb2.Empty()

    async def EraseAccount(
        self, request: message_pb2.EraseAccountRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.erase_account(caller(), request.email, request.account_id)
        return empty_pb2.Empty()


def register(
    server: grpc.aio.Server, service: MessageService, dead_letters: DeadLetters | None = None
) -> Sequence[str]:
    """Add the servicer to ``server``; the full service names, for health and reflection."""
    message_pb2_grpc.add_MessageServiceServicer_to_server(
        MessageServicer(service, dead_letters), server
    )
    return [SERVICE_NAME]
