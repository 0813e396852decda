"""Typed Python client SDK for Missive: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    from missive_client import Client

    with Client.connect() as client:
        client.login("alice@example.com", "correct-horse-battery")
        client.messages.send("bob@example.com", "Hello Bob")

The facade is hand-written; the wire layers under ``missive_client._generated`` are generated
from the contracts (betterproto2 for gRPC, openapi-python-client for REST) and are not part of
the public surface.
"""

from missive_client._async_client import (
    AsyncClient,
    AsyncMessages,
    AsyncNotifications,
    AsyncUsers,
)
from missive_client._async_pagination import AsyncPager
from missive_client._client import Client, Messages, Notifications, Users
from missive_client._config import ClientConfig, Transport
from missive_client._errors import (
    AlreadyExists,
    ConfigError,
    DeadlineExceeded,
    InvalidArgument,
    MissiveError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from missive_client._models import (
    Conversation,
    HealthStatus,
    Message,
    Notification,
    Page,
    ServiceHealth,
    Subscription,
    Token,
    User,
)
from missive_client._pagination import Pager
from missive_client._stream import AsyncNotificationStream, NotificationStream, ReconnectCallback

__all__ = [
    "AlreadyExists",
    "AsyncClient",
    "AsyncMessages",
    "AsyncNotificationStream",
    "AsyncNotifications",
    "AsyncPager",
    "AsyncUsers",
    "Client",
    "ClientConfig",
    "ConfigError",
    "Conversation",
    "DeadlineExceeded",
    "HealthStatus",
    "InvalidArgument",
    "Message",
    "Messages",
    "MissiveError",
    "NotFound",
    "Notification",
    "NotificationStream",
    "Notifications",
    "Page",
    "Pager",
    "PermissionDenied",
    "RateLimited",
    "ReconnectCallback",
    "ServerError",
    "ServiceHealth",
    "Subscription",
    "Token",
    "Transport",
    "Unauthenticated",
    "Unavailable",
    "User",
    "Users",
]
