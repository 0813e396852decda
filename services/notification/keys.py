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

Cluster layout (Valkey Cluster, database 0 shared with the other services; every key starts with
``n:``). A receiver's email belongs to one of BUCKETS buckets (a BLAKE2b hash of the email,
modulo BUCKETS); each bucket has a hash tag ``{t}`` (BUCKET_TAGS, spread evenly over the slot
space: the bucket scheme of services.common.buckets, shared by the services), and every key
of an email carries its bucket's tag, so each script touches one slot:

    n:notifications:{t}:{email}          list: as notifications:{email}
    n:subscriptions:{t}:{email}          hash: the email's own field of the standalone
                                         `subscriptions` hash (email -> "1" / "0"; missing:
                                         subscribed): one hash per user, no global key, and
                                         the same scripts in both layouts
    n:account:{t}:{email}                string: as account:{email}
    n:for_message:{t}:{msg id}           string: as notification:for_message:{msg id}, in the
                                         receiver's bucket (the dedupe of CreateNotification(s)
                                         is per receiver bucket; a message has one receiver)
    n:outbox:frontend:{t}                stream: pushes of the bucket's receivers' notifications
    n:outbox:frontend:{t}:dead           stream: its dead letters (same slot as the stream)

(``{t}`` is the literal hash tag, braces included.) Why each script is single-slot:

- create (dedupe key, subscription, list, outbox bucket, account marker): all keys of the
  receiver, so under its bucket's tag - the outbox bucket is the receiver's bucket;
- create_many: the batch is split by receiver bucket, one script per bucket (sent
  concurrently); each item has the outcome it would have alone;
- claim and erase (account marker, list, subscription), mark read, mark all read and a page:
  keys of one email only.
"""

from __future__ import annotations

from typing import Final

from services.common import buckets
from services.common.buckets import email_bucket, spread_tags

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


# The cluster layout (see the module docstring).
CLUSTER_PREFIX: Final = "n:"
BUCKETS: Final = buckets.BUCKETS
"""Buckets of receivers (services.common.buckets): the most Cluster masters
NotificationService's data and outbox spread over (one relay per bucket)."""


BUCKET_TAGS: Final = spread_tags("n", BUCKETS)


def bucket(email: str) -> int:
    """The bucket of ``email`` (services.common.buckets.email_bucket)."""
    return email_bucket(email)


def tag(email: str) -> str:
    """The hash tag (braces included) of every cluster key of ``email``."""
    return "{" + BUCKET_TAGS[bucket(email)] + "}"


def cluster_notifications_key(email: str) -> str:
    return f"n:notifications:{tag(email)}:{email}"


def cluster_subscription_key(email: str) -> str:
    """The hash holding ``email``'s one subscription field."""
    return f"n:subscriptions:{tag(email)}:{email}"


def cluster_account_key(email: str) -> str:
    return f"n:account:{tag(email)}:{email}"


def cluster_dedupe_key(receiver_email: str, message_id: int) -> str:
    """The dedupe key of ``message_id``'s notification, in its receiver's bucket."""
    return f"n:for_message:{tag(receiver_email)}:{message_id}"


def cluster_outbox_stream(index: int) -> str:
    """The push outbox stream of bucket ``index``."""
    return f"n:outbox:frontend:{{{BUCKET_TAGS[index]}}}"


def cluster_outbox_dead_letters(index: int) -> str:
    """The dead letters of bucket ``index``'s outbox (same slot as the stream)."""
    return f"{cluster_outbox_stream(index)}:dead"


class Layout:
    """The keys the store uses for one email (or message), in one of the two layouts.

    ``group`` names the slot a receiver's keys share: items of one group can go in one script
    (the standalone layout has one group; the cluster layout one per bucket)."""

    streams: tuple[str, ...]
    """Every outbox stream of the layout (one per group)."""

    def group(self, email: str) -> int:
        raise NotImplementedError

    def notifications(self, email: str) -> str:
        raise NotImplementedError

    def subscriptions(self, email: str) -> str:
        """The hash holding ``email``'s subscription field (the field is the email)."""
        raise NotImplementedError

    def account(self, email: str) -> str:
        raise NotImplementedError

    def dedupe(self, receiver_email: str, message_id: int) -> str:
        raise NotImplementedError

    def outbox(self, email: str) -> str:
        """The outbox stream of the notifications of ``email``."""
        return self.streams[self.group(email)]


class StandaloneLayout(Layout):
    """Today's keys of DB 2 (the names above the cluster layout in the module docstring)."""

    streams = (OUTBOX_STREAM,)

    def group(self, email: str) -> int:
        return 0

    def notifications(self, email: str) -> str:
        return notifications_key(email)

    def subscriptions(self, email: str) -> str:
        return SUBSCRIPTIONS_KEY

    def account(self, email: str) -> str:
        return account_key(email)

    def dedupe(self, receiver_email: str, message_id: int) -> str:
        return dedupe_key(message_id)


class ClusterLayout(Layout):
    """The ``n:`` keys under each receiver's bucket tag (see the module docstring)."""

    streams = tuple(cluster_outbox_stream(i) for i in range(BUCKETS))

    def group(self, email: str) -> int:
        return bucket(email)

    def notifications(self, email: str) -> str:
        return cluster_notifications_key(email)

    def subscriptions(self, email: str) -> str:
        return cluster_subscription_key(email)

    def account(self, email: str) -> str:
        return cluster_account_key(email)

    def dedupe(self, receiver_email: str, message_id: int) -> str:
        return cluster_dedupe_key(receiver_email, message_id)


STANDALONE: Final = StandaloneLayout()
CLUSTER: Final = ClusterLayout()
