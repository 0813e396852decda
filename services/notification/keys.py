"""NotificationService's Redis key names (DB 2), built in one place from normalised emails and ids.

    notifications:{email}                list of notification JSON objects, newest first, at most
                                         `retention` long (LPUSH + LTRIM in one script)
    subscriptions                        hash email -> "1" subscribed / "0" unsubscribed;
                                         a missing field means subscribed (the default)
    account:{email}                      string: id of the account that owns the email's list
                                         and subscription here ("{id}:erased" once that account
                                         was deleted and its data erased)
    notification:for_message:{msg id}    string: the notification id created for that message
                                         (dedupe key of CreateNotification; expires after 7 days)
    outbox:frontend                      stream: notifications still to push to FrontendService
    outbox:frontend:dead                 stream: pushes given up on (dead letters)

Every email in a key was normalised first, so it holds no ':' or glob character.
"""

from __future__ import annotations

from typing import Final

SUBSCRIPTIONS_KEY: Final = "subscriptions"
OUTBOX_STREAM: Final = "outbox:frontend"
OUTBOX_DEAD_LETTER_STREAM: Final = "outbox:frontend:dead"


def notifications_key(email: str) -> str:
    """The list of ``email``'s notifications, newest first."""
    return f"notifications:{email}"


def account_key(email: str) -> str:
    """The id of the account that owns ``email``'s notifications and subscription here."""
    return f"account:{email}"


def dedupe_key(message_id: int) -> str:
    """Marks that the notification of ``message_id`` exists; holds its id."""
    return f"notification:for_message:{message_id}"
