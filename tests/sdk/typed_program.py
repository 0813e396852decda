"""A small program using the SDK as an application would; test_typing runs mypy --strict on it.

It is never run by pytest; every annotation below must agree with what the SDK declares.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from missive_client import (
    AsyncClient,
    Client,
    Conversation,
    Message,
    MissiveError,
    Notification,
    NotificationStream,
    Page,
    Pager,
    RateLimited,
    ServiceHealth,
    Subscription,
    Token,
    User,
)


def chat(client: Client, peer: str) -> list[str]:
    token: Token = client.login("alice@example.com", "correct-horse-battery", keep_password=True)
    expires: datetime = token.expires_at
    me: User = client.users.get()
    sent: Message = client.messages.send(peer, f"hi from {me.name}, until {expires:%H:%M}")
    message_id: int = sent.id
    history: Pager[Message] = client.messages.list(peer, page_size=20)
    first: Page[Message] = history.first_page()
    unread: int | None = client.notifications.list(unread_only=True).first_page().unread_count
    conversations: list[Conversation] = client.messages.conversations().to_list(10)
    subscription: Subscription = client.notifications.subscribe()
    health: list[ServiceHealth] = client.status()
    lines = [m.content for m in history] + [c.peer_email for c in conversations]
    lines.append(f"{message_id} {len(first.items)} {unread} {subscription.subscribed}")
    lines.extend(item.service for item in health if not item.serving)
    try:
        client.messages.delete(message_id)
    except RateLimited as exc:
        wait: float | None = exc.retry_after
        lines.append(f"retry in {wait}")
    except MissiveError as exc:
        lines.append(f"{exc.code}: {exc.message}")
    return lines


def first_notification(client: Client) -> Notification | None:
    stream: NotificationStream = client.notifications.watch()
    with stream:
        for notification in stream:
            return notification
    return None


async def async_chat(peer: str) -> int:
    async with AsyncClient(timeout=5.0, transport="rest") as client:
        await client.login("alice@example.com", "correct-horse-battery")
        sent: Message = await client.messages.send(peer, "hello")
        ids: list[int] = [m.id async for m in client.messages.list(peer)]
        marked: int = await client.notifications.mark_all_read()
        async with client.notifications.watch() as stream:
            async for notification in stream:
                ids.append(notification.message_id)
                break
        return sent.id + len(ids) + marked


def main() -> None:
    with Client.connect() as client:
        print(chat(client, "bob@example.com"), first_notification(client))
    print(asyncio.run(async_chat("bob@example.com")))


if __name__ == "__main__":
    main()
