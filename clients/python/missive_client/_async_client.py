"""The asyncio client: ``async with AsyncClient(...)`` and its operation groups.

The blocking twin ``_client.py`` is generated from this file by ``python -m codegen``
(``codegen/sdk_sync.py``), so edit this one.
"""

from __future__ import annotations

import uuid
from types import TracebackType
from typing import Self

from missive_client import _ops
from missive_client._async_core import AsyncCore
from missive_client._async_pagination import AsyncPager
from missive_client._config import ClientConfig, Transport
from missive_client._models import (
    Conversation,
    Message,
    Notification,
    ServiceHealth,
    Subscription,
    Token,
    User,
)
from missive_client._session import Session
from missive_client._stream import AsyncNotificationStream, ReconnectCallback, async_watch

__all__ = ["AsyncClient", "AsyncMessages", "AsyncNotifications", "AsyncUsers"]


def new_request_id() -> str:
    """A fresh idempotency key for ``send`` (uuid4, hex)."""
    return uuid.uuid4().hex


class AsyncUsers:
    """Accounts: ``client.users``."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    def _email(self, email: str | None) -> str:
        return email if email is not None else self._core.session.require_email()

    async def register(self, name: str, email: str, password: str) -> User:
        """Create an account (no sign-in needed) and return it; AlreadyExists if taken.

        Registration does not sign in: call :meth:`AsyncClient.login` next. Not retried, since a
        repeat after an unknown outcome would answer AlreadyExists.
        """
        return await self._core.run(_ops.register(name, email, password))

    async def get(self, email: str | None = None) -> User:
        """The signed-in user's record (``email`` defaults to the signed-in user's own)."""
        return await self._core.run(_ops.get_user(self._core.config.transport, self._email(email)))

    async def update(
        self, email: str | None = None, *, name: str | None = None, password: str | None = None
    ) -> User:
        """Change the signed-in user's name and/or password; returns the updated record.

        A kept password (``login(..., keep_password=True)``) is replaced by the new one.
        """
        if name is None and password is None:
            raise ValueError("update() needs a new name or a new password")
        user = await self._core.run(_ops.update_user(self._email(email), name, password))
        if password is not None and self._core.session.can_refresh:
            token = self._core.session.token
            if token is not None:
                self._core.session.signed_in(token, password)
        return user

    async def delete(self, email: str | None = None) -> None:
        """Delete the signed-in user's account: its token stops working at once, and its
        messages, conversations, notifications and subscription are erased everywhere."""
        await self._core.run(_ops.delete_user(self._email(email)))

    async def revoke_tokens(self, email: str | None = None) -> None:
        """Sign out everywhere: every token of the signed-in user's account issued so far,
        this client's included, stops working; sign in again for a new one."""
        await self._core.run(_ops.revoke_tokens(self._email(email)))

    def list(self, *, page_size: int | None = None, page_token: str = "") -> AsyncPager[User]:
        """Every registered user, in ascending email order, fetched page by page (``async for``).

        Operators only: for an ordinary user the first page raises ``PermissionDenied``.
        ``page_size`` is 1 to 100 (the server's default is 50). Iterating fetches lazily.
        """
        return AsyncPager(
            lambda token: self._core.run(_ops.list_users(page_size, token)), page_token
        )


class AsyncMessages:
    """Messages and conversations: ``client.messages``."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    def _email(self, email: str | None) -> str:
        return email if email is not None else self._core.session.require_email()

    async def send(
        self,
        to: str,
        content: str,
        *,
        sender: str | None = None,
        client_request_id: str | None = None,
    ) -> Message:
        """Send ``content`` to the user ``to`` and return the stored message.

        The call carries a client request id (a new uuid4 unless you pass one): the SDK's own
        retries after ``Unavailable`` reuse it, so the message is stored at most once. Pass the
        same ``client_request_id`` yourself to make your own retries idempotent too.
        """
        request_id = client_request_id or new_request_id()
        call = _ops.send_message(
            self._core.config.transport, self._email(sender), to, content, request_id
        )
        return await self._core.run(call)

    async def get(self, message_id: int, *, email: str | None = None) -> Message:
        """One message the signed-in user sent or received; NotFound otherwise."""
        call = _ops.get_message(self._core.config.transport, self._email(email), message_id)
        return await self._core.run(call)

    def list(
        self,
        peer: str | None = None,
        *,
        email: str | None = None,
        page_size: int | None = None,
        page_token: str = "",
    ) -> AsyncPager[Message]:
        """The signed-in user's messages, newest first: with ``peer`` only, or with everyone."""
        user = self._email(email)
        transport = self._core.config.transport
        return AsyncPager(
            lambda token: self._core.run(
                _ops.list_messages(transport, user, peer, page_size, token)
            ),
            page_token,
        )

    def conversations(
        self, *, email: str | None = None, page_size: int | None = None, page_token: str = ""
    ) -> AsyncPager[Conversation]:
        """The signed-in user's conversations, most recent first, with unread counts."""
        user = self._email(email)
        transport = self._core.config.transport
        return AsyncPager(
            lambda token: self._core.run(
                _ops.list_conversations(transport, user, page_size, token)
            ),
            page_token,
        )

    async def mark_read(self, peer: str, *, email: str | None = None) -> Conversation:
        """Mark every message ``peer`` sent to the signed-in user read; returns the conversation."""
        call = _ops.mark_conversation_read(self._core.config.transport, self._email(email), peer)
        return await self._core.run(call)

    async def delete(self, message_id: int, *, email: str | None = None) -> None:
        """Delete a message the signed-in user sent (PermissionDenied for a received one)."""
        call = _ops.delete_message(self._core.config.transport, self._email(email), message_id)
        await self._core.run(call)


class AsyncNotifications:
    """Notifications, their read state, the subscription and the live stream."""

    def __init__(self, core: AsyncCore) -> None:
        self._core = core

    def _email(self, email: str | None) -> str:
        return email if email is not None else self._core.session.require_email()

    def list(
        self,
        *,
        unread_only: bool = False,
        email: str | None = None,
        page_size: int | None = None,
        page_token: str = "",
    ) -> AsyncPager[Notification]:
        """The signed-in user's stored notifications, newest first (optionally only unread).

        Each page also carries the user's total ``unread_count`` (see ``AsyncPager.pages()``).
        """
        user = self._email(email)
        transport = self._core.config.transport
        return AsyncPager(
            lambda token: self._core.run(
                _ops.list_notifications(transport, user, unread_only, page_size, token)
            ),
            page_token,
        )

    async def unread_count(self, *, email: str | None = None) -> int:
        """How many of the signed-in user's stored notifications are unread."""
        page = await self.list(unread_only=True, email=email, page_size=1).first_page()
        return page.unread_count or 0

    async def mark_read(self, notification_id: str, *, email: str | None = None) -> Notification:
        """Mark one notification read and return it; NotFound if the user has no such id."""
        call = _ops.mark_notification_read(
            self._core.config.transport, self._email(email), notification_id
        )
        return await self._core.run(call)

    async def mark_all_read(self, *, email: str | None = None) -> int:
        """Mark all of the signed-in user's notifications read; how many were unread."""
        call = _ops.mark_all_notifications_read(self._core.config.transport, self._email(email))
        return await self._core.run(call)

    async def is_subscribed(self, *, email: str | None = None) -> bool:
        """Whether the signed-in user receives notifications (true unless they unsubscribed)."""
        call = _ops.get_subscription(self._core.config.transport, self._email(email))
        subscription = await self._core.run(call)
        return subscription.subscribed

    async def subscribe(self, *, email: str | None = None) -> Subscription:
        """Receive notifications of messages from now on (idempotent)."""
        return await self._core.run(_ops.subscribe(self._core.config.transport, self._email(email)))

    async def unsubscribe(self, *, email: str | None = None) -> Subscription:
        """Stop notifications of messages from now on; messages still arrive (idempotent)."""
        call = _ops.unsubscribe(self._core.config.transport, self._email(email))
        return await self._core.run(call)

    def watch(
        self,
        email: str | None = None,
        *,
        reconnect: bool = True,
        on_reconnect: ReconnectCallback | None = None,
    ) -> AsyncNotificationStream:
        """Iterate (``async for``) over the user's notifications live: unread ones, then new ones.

        The stream (gRPC, FrontendService) reconnects after outages with backoff (honouring a
        server's retry-after) and never yields the same notification id twice, even though
        the server replays unread notifications on every reconnection. Watching does not mark
        anything read. End it with ``aclose()``, an ``async with`` block or by cancelling the
        task; errors other than outages (PermissionDenied, InvalidArgument, ...) are raised
        from the iteration.
        """
        return async_watch(
            self._core, self._email(email), reconnect=reconnect, on_reconnect=on_reconnect
        )


class AsyncClient:
    """Asyncio Missive client: ``async with AsyncClient() as client: ...``.

    Takes the same arguments as :meth:`Client.connect` (addresses default to the
    ``MISSIVE_*`` variables, then to the local system). Connections open on first use, inside
    the running event loop; leaving the ``async with`` block (or ``await client.close()``)
    releases them.
    """

    users: AsyncUsers
    messages: AsyncMessages
    notifications: AsyncNotifications

    def __init__(
        self,
        *,
        host: str | None = None,
        profile: str | None = None,
        user_url: str | None = None,
        message_url: str | None = None,
        notification_url: str | None = None,
        user_grpc: str | None = None,
        message_grpc: str | None = None,
        notification_grpc: str | None = None,
        frontend_grpc: str | None = None,
        transport: Transport | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        refresh_margin: float | None = None,
        token: str | None = None,
    ) -> None:
        """Resolve the configuration (ConfigError naming a malformed setting); no I/O yet."""
        config = ClientConfig.resolve(
            host=host,
            profile=profile,
            user_url=user_url,
            message_url=message_url,
            notification_url=notification_url,
            user_grpc=user_grpc,
            message_grpc=message_grpc,
            notification_grpc=notification_grpc,
            frontend_grpc=frontend_grpc,
            transport=transport,
            timeout=timeout,
            retries=retries,
            refresh_margin=refresh_margin,
        )
        session = Session()
        if token:
            session.use_token(token)
        self._core = AsyncCore(config, session)
        self.users = AsyncUsers(self._core)
        self.messages = AsyncMessages(self._core)
        self.notifications = AsyncNotifications(self._core)

    def __repr__(self) -> str:
        return f"AsyncClient(transport={self.config.transport!r}, email={self.email!r})"

    @property
    def config(self) -> ClientConfig:
        """The resolved configuration (addresses, transport, timeout, ...)."""
        return self._core.config

    @property
    def token(self) -> Token | None:
        """The current access token, or None when not signed in."""
        return self._core.session.token

    @property
    def email(self) -> str | None:
        """The signed-in user's email, or None."""
        token = self._core.session.token
        return token.email if token else None

    async def login(self, email: str, password: str, *, keep_password: bool = False) -> Token:
        """Sign in; later calls carry the returned token. Unauthenticated on wrong credentials.

        Tokens are short-lived and there is no refresh endpoint. With ``keep_password=True``
        the client keeps the password in this process's memory (never on disk or in a repr)
        and signs in again shortly before the token expires; without it, sign in again
        yourself when calls start failing with Unauthenticated. RateLimited after too many
        failed attempts.
        """
        return await self._core.login(email, password, keep_password)

    def logout(self) -> None:
        """Forget the token and any kept password (the token stays valid until it expires)."""
        self._core.session.clear()

    async def status(self) -> list[ServiceHealth]:
        """The health of every service endpoint (gRPC health checks and REST ``/health``)."""
        return await self._core.transport.health()

    async def close(self) -> None:
        """Close the connections; the client must not be used afterwards."""
        await self._core.transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
