"""Every user-facing operation as a transport-neutral description (sans I/O).

Each function returns a :class:`GrpcCall` or :class:`RestCall`: which generated stub method or
REST endpoint to invoke with which generated request, and how to convert the generated reply
into the SDK's dataclasses. The sync and async clients execute the same descriptions, so the
request building and conversion exist once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from missive_client import _convert as to
from missive_client._calls import Call, GrpcCall, ServiceName, rest_call
from missive_client._config import Transport
from missive_client._generated.grpc.missive.message import v1 as message_pb
from missive_client._generated.grpc.missive.notification import v1 as notification_pb
from missive_client._generated.grpc.missive.user import v1 as user_pb
from missive_client._generated.rest.message.api.conversations import (
    list_conversations as rest_list_conversations,
)
from missive_client._generated.rest.message.api.conversations import (
    mark_conversation_read as rest_mark_conversation_read,
)
from missive_client._generated.rest.message.api.messages import (
    delete_message as rest_delete_message,
)
from missive_client._generated.rest.message.api.messages import get_message as rest_get_message
from missive_client._generated.rest.message.api.messages import (
    get_messages as rest_get_messages,
)
from missive_client._generated.rest.message.api.messages import send_message as rest_send_message
from missive_client._generated.rest.message.models import MarkReadRequest as RestMessageMarkRead
from missive_client._generated.rest.message.models import (
    SendMessageRequest as RestSendMessageRequest,
)
from missive_client._generated.rest.message.types import UNSET as MESSAGE_UNSET
from missive_client._generated.rest.notification.api.notifications import (
    list_notifications as rest_list_notifications,
)
from missive_client._generated.rest.notification.api.notifications import (
    mark_all_notifications_read as rest_mark_all_read,
)
from missive_client._generated.rest.notification.api.notifications import (
    mark_notification_read as rest_mark_notification_read,
)
from missive_client._generated.rest.notification.api.subscriptions import (
    get_subscription as rest_get_subscription,
)
from missive_client._generated.rest.notification.api.subscriptions import (
    subscribe_user as rest_subscribe_user,
)
from missive_client._generated.rest.notification.api.subscriptions import (
    unsubscribe_user as rest_unsubscribe_user,
)
from missive_client._generated.rest.notification.models import (
    MarkReadRequest as RestNotificationMarkRead,
)
from missive_client._generated.rest.notification.types import UNSET as NOTIFICATION_UNSET
from missive_client._generated.rest.user.api.auth import login as rest_login
from missive_client._generated.rest.user.api.auth import revoke_tokens as rest_revoke_tokens
from missive_client._generated.rest.user.api.users import create_user as rest_create_user
from missive_client._generated.rest.user.api.users import delete_user as rest_delete_user
from missive_client._generated.rest.user.api.users import get_user as rest_get_user
from missive_client._generated.rest.user.api.users import list_users as rest_list_users
from missive_client._generated.rest.user.api.users import update_user as rest_update_user
from missive_client._generated.rest.user.models import LoginRequest, UserCreate, UserUpdate
from missive_client._generated.rest.user.types import UNSET
from missive_client._models import Conversation, Message, Notification, Page, Subscription, Token
from missive_client._models import User as UserModel

# Each generated REST package has its own UNSET sentinel, compared by identity.
_UNSET: Mapping[ServiceName, Any] = {
    "user": UNSET,
    "message": MESSAGE_UNSET,
    "notification": NOTIFICATION_UNSET,
}


def _omit(service: ServiceName, value: Any) -> Any:
    """``value``, or ``service``'s UNSET (the parameter is left out) when it is None or ""."""
    return _UNSET[service] if value is None or value == "" else value


def _page_size(page_size: int | None) -> int:
    """gRPC's page_size: 0 asks for the server's default."""
    return 0 if page_size is None else page_size


# -- users ----------------------------------------------------------------------------------


def login(transport: Transport, email: str, password: str) -> Call[Token]:
    """Sign in: AuthenticateUser or POST /login."""
    if transport == "grpc":
        request = user_pb.AuthenticateUserRequest(email=email, password=password)
        return GrpcCall("user", "authenticate_user", request, to.token(email), auth=False)
    body = LoginRequest(email=email, password=password)
    return rest_call("user", rest_login, to.token(email), auth=False, body=body)


def register(name: str, email: str, password: str) -> Call[UserModel]:
    """Create an account: POST /users (REST only)."""
    body = UserCreate(name=name, email=email, password=password)
    return rest_call("user", rest_create_user, to.user, auth=False, retry_safe=False, body=body)


def get_user(transport: Transport, email: str) -> Call[UserModel]:
    """The caller's own record: GetUser or GET /users/{email}."""
    if transport == "grpc":
        return GrpcCall("user", "get_user", user_pb.GetUserRequest(email=email), to.user)
    return rest_call("user", rest_get_user, to.user, email=email)


def update_user(email: str, name: str | None, password: str | None) -> Call[UserModel]:
    """Change name and/or password: PUT /users/{email} (REST only)."""
    body = UserUpdate(
        name=UNSET if name is None else name,
        password=UNSET if password is None else password,
    )
    return rest_call("user", rest_update_user, to.user, email=email, body=body)


def delete_user(email: str) -> Call[None]:
    """Delete the caller's account: DELETE /users/{email} (REST only)."""
    return rest_call("user", rest_delete_user, to.nothing, retry_safe=False, email=email)


def revoke_tokens(email: str) -> Call[None]:
    """Sign out everywhere: POST /users/{email}/revoke_tokens (REST only)."""
    return rest_call("user", rest_revoke_tokens, to.nothing, retry_safe=False, email=email)


def list_users(page_size: int | None, page_token: str) -> Call[Page[UserModel]]:
    """One page of the directory: GET /users (REST only, operators only; ListUsers is internal)."""

    def convert(reply: Any) -> Page[UserModel]:
        return Page(tuple(to.user(user) for user in reply.users), reply.next_page_token)

    return rest_call(
        "user",
        rest_list_users,
        convert,
        page_size=_omit("user", page_size),
        page_token=_omit("user", page_token),
    )


# -- messages -------------------------------------------------------------------------------


def send_message(
    transport: Transport, sender: str, receiver: str, content: str, request_id: str
) -> Call[Message]:
    """Send: SendMessage or POST /messages, idempotent through ``request_id``."""
    if transport == "grpc":
        request = message_pb.SendMessageRequest(
            sender_email=sender,
            receiver_email=receiver,
            content=content,
            client_request_id=request_id,
        )
        return GrpcCall("message", "send_message", request, lambda reply: to.message(reply.message))
    body = RestSendMessageRequest(
        sender_email=sender, receiver_email=receiver, content=content, client_request_id=request_id
    )
    return rest_call("message", rest_send_message, to.message, body=body)


def get_message(transport: Transport, email: str, message_id: int) -> Call[Message]:
    """One message: GetMessage or GET /messages/{id}."""
    if transport == "grpc":
        request = message_pb.GetMessageRequest(user_email=email, id=message_id)
        return GrpcCall("message", "get_message", request, to.message)
    return rest_call("message", rest_get_message, to.message, id=message_id, email=email)


def list_messages(
    transport: Transport, email: str, peer: str | None, page_size: int | None, page_token: str
) -> Call[Page[Message]]:
    """One page of messages, newest first: GetMessages or GET /messages."""

    def convert(reply: Any) -> Page[Message]:
        return Page(tuple(to.message(item) for item in reply.messages), reply.next_page_token)

    if transport == "grpc":
        request = message_pb.GetMessagesRequest(
            user_email=email,
            peer_email=peer or "",
            page_size=_page_size(page_size),
            page_token=page_token,
        )
        return GrpcCall("message", "get_messages", request, convert)
    return rest_call(
        "message",
        rest_get_messages,
        convert,
        email=email,
        peer_email=_omit("message", peer),
        page_size=_omit("message", page_size),
        page_token=_omit("message", page_token),
    )


def list_conversations(
    transport: Transport, email: str, page_size: int | None, page_token: str
) -> Call[Page[Conversation]]:
    """One page of conversations, newest first: ListConversations or GET /list_conversations."""

    def convert(reply: Any) -> Page[Conversation]:
        items = tuple(to.conversation(item) for item in reply.conversations)
        return Page(items, reply.next_page_token)

    if transport == "grpc":
        request = message_pb.ListConversationsRequest(
            user_email=email, page_size=_page_size(page_size), page_token=page_token
        )
        return GrpcCall("message", "list_conversations", request, convert)
    return rest_call(
        "message",
        rest_list_conversations,
        convert,
        email=email,
        page_size=_omit("message", page_size),
        page_token=_omit("message", page_token),
    )


def mark_conversation_read(transport: Transport, email: str, peer: str) -> Call[Conversation]:
    """Mark what ``peer`` sent read: MarkConversationRead or POST /conversations/{peer}/read."""
    if transport == "grpc":
        request = message_pb.MarkConversationReadRequest(user_email=email, peer_email=peer)
        return GrpcCall("message", "mark_conversation_read", request, to.conversation)
    body = RestMessageMarkRead(email=email)
    return rest_call(
        "message", rest_mark_conversation_read, to.conversation, peer_email=peer, body=body
    )


def delete_message(transport: Transport, email: str, message_id: int) -> Call[None]:
    """Delete a message the caller sent: DeleteMessage or DELETE /messages/{id}."""
    if transport == "grpc":
        request = message_pb.DeleteMessageRequest(user_email=email, id=message_id)
        return GrpcCall("message", "delete_message", request, to.nothing, retry_safe=False)
    return rest_call(
        "message", rest_delete_message, to.nothing, retry_safe=False, id=message_id, email=email
    )


# -- notifications --------------------------------------------------------------------------


def list_notifications(
    transport: Transport, email: str, unread_only: bool, page_size: int | None, page_token: str
) -> Call[Page[Notification]]:
    """One page of notifications, newest first: ListNotifications or GET /list_notifications."""

    def convert(reply: Any) -> Page[Notification]:
        items = tuple(to.notification(item) for item in reply.notifications)
        return Page(items, reply.next_page_token, int(reply.unread_count))

    if transport == "grpc":
        request = notification_pb.ListNotificationsRequest(
            email=email,
            unread_only=unread_only,
            page_size=_page_size(page_size),
            page_token=page_token,
        )
        return GrpcCall("notification", "list_notifications", request, convert)
    return rest_call(
        "notification",
        rest_list_notifications,
        convert,
        email=email,
        unread_only=unread_only,
        page_size=_omit("notification", page_size),
        page_token=_omit("notification", page_token),
    )


def mark_notification_read(
    transport: Transport, email: str, notification_id: str
) -> Call[Notification]:
    """Mark one read: MarkNotificationRead or POST /notifications/{id}/read."""
    if transport == "grpc":
        request = notification_pb.MarkNotificationReadRequest(email=email, id=notification_id)
        return GrpcCall("notification", "mark_notification_read", request, to.notification)
    body = RestNotificationMarkRead(email=email)
    return rest_call(
        "notification", rest_mark_notification_read, to.notification, id=notification_id, body=body
    )


def mark_all_notifications_read(transport: Transport, email: str) -> Call[int]:
    """Mark all read, returning how many changed: MarkAllNotificationsRead or POST .../read_all."""
    if transport == "grpc":
        request = notification_pb.MarkAllNotificationsReadRequest(email=email)
        return GrpcCall(
            "notification",
            "mark_all_notifications_read",
            request,
            lambda reply: int(reply.marked),
        )
    body = RestNotificationMarkRead(email=email)
    return rest_call("notification", rest_mark_all_read, lambda reply: int(reply.marked), body=body)


def get_subscription(transport: Transport, email: str) -> Call[Subscription]:
    """The subscription state: CheckUserSubscribed or GET /subscriptions/{email}."""
    if transport == "grpc":
        request = notification_pb.CheckUserSubscribedRequest(email=email)
        return GrpcCall("notification", "check_user_subscribed", request, to.subscription)
    return rest_call("notification", rest_get_subscription, to.subscription, email=email)


def subscribe(transport: Transport, email: str) -> Call[Subscription]:
    """Subscribe: SubscribeUser or PUT /subscriptions/{email}."""
    if transport == "grpc":
        request = notification_pb.SubscribeUserRequest(email=email)
        return GrpcCall("notification", "subscribe_user", request, to.subscription)
    return rest_call("notification", rest_subscribe_user, to.subscription, email=email)


def unsubscribe(transport: Transport, email: str) -> Call[Subscription]:
    """Unsubscribe: UnsubscribeUser or DELETE /subscriptions/{email}."""
    if transport == "grpc":
        request = notification_pb.UnsubscribeUserRequest(email=email)
        return GrpcCall("notification", "unsubscribe_user", request, to.subscription)
    return rest_call("notification", rest_unsubscribe_user, to.subscription, email=email)
