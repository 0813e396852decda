"""MessageService's key layout on a Valkey/Redis Cluster (database 0, every key under ``m:``).

The standalone layout (services.message.keys, DB 1) puts a message, its conversation, both
users' indexes, the sender's counters, the id counter and the outbox in one Lua script: on a
Cluster those keys lie in different hash slots and the script would be refused (CROSSSLOT).
Here every key carries a hash tag, and every script touches the keys of one tag only.

Two kinds of slot:

Bucket slot, tag ``{t}`` of bucket k (k = 0..BUCKETS-1; :func:`bucket_of` picks k from the two
sorted emails of a conversation, so a conversation, all its messages and its events live in one
bucket). ``t`` is ``BUCKET_TAGS[k]``, ``mb<k>`` or ``mb<k>.<n>``: the k-th tag hashes into the
k-th of BUCKETS equal ranges of slots, so the buckets spread evenly over the masters (the bucket
scheme of services.common.buckets, shared with UserService and NotificationService):

- ``m:{t}:message:<id>`` - string: the message's JSON, as in standalone mode.
- ``m:{t}:conversation:<a>:<b>`` - hash: the conversation (the two emails sorted), the
  same fields as in standalone mode (participants, last_message_id, message_count,
  updated_at, last_sent_id, unread:<email>, read_upto:<email>).
- ``m:{t}:conversation:<a>:<b>:messages`` - sorted set: the conversation's message ids.
- ``m:{t}:ids`` - string: the bucket's id sequence (the last sequence number handed out,
  in milliseconds since the epoch; see :func:`message_id`).
- ``m:outbox:{t}`` - stream: the notification events of the bucket's messages, consumed
  by one relay per bucket (consumer group ``notification-relay``).
- ``m:outbox:{t}:dead`` - stream: the bucket's dead letters (same slot as its stream).

User slot, tag ``{<email>}`` (a normalised email never holds a brace):

- ``m:user:{<email>}:messages`` - sorted set: ids of every message the user sent or received
  (score = id): GetMessages without a peer.
- ``m:user:{<email>}:conversations_by_time`` - sorted set: peer email -> id of the last
  message sent in the conversation with that peer (most recent last): ListConversations.
  (The standalone set ``user:{email}:conversations`` has no counterpart: this sorted set
  holds the same conversations.)
- ``m:account:{<email>}`` - string: the account that owns the email's data (``<id>:erased``
  once erased), as in standalone mode.
- ``m:user:{<email>}:stored_bytes`` - string: the sender's storage quota in use (each message
  counts as its JSON with the id counted as ID_WIDTH digits, see :func:`charge`).
- ``m:send_rate:{<email>}`` - string with TTL: messages sent in the current rate window.
- ``m:idempotency:send:{<email>}:<request id>`` - string with TTL: the record of a
  client_request_id (JSON as in standalone mode), or PENDING while its send is in flight.

Why each script is single-slot (services.message.cluster_lua):

- RECEIVER (receiver slot): the receiver's account marker and message ids - ``{<receiver>}``.
- RESERVE (sender slot): idempotency key, account marker, send-rate counter, stored bytes,
  message ids - all ``{<sender>}``.
- STORE and DELETE, MARK_READ, the reads of messages and conversations, DROP_EMPTY (bucket
  slot): a message, its conversation hash and message set, the bucket's id sequence and its
  outbox stream - all ``{t}`` of the conversation's bucket. A message's key is built inside the
  script from the bucket's prefix, which carries the same tag.
- INDEX, UNINDEX, REFUND, CLAIM and TAKE_OVER (one user's slot): that
  user's indexes, idempotency record, stored bytes, send rate and account marker - all
  ``{<email>}``.

Ids: :func:`message_id` = sequence * BUCKETS + k. STORE takes the bucket's sequence from its
master's clock in milliseconds, raised when needed above the bucket's last sequence and above
the newest id in the sender's and the receiver's indexes (RESERVE and RECEIVER read them). An id
names its bucket (``id % BUCKETS``), no global counter is touched, ids only grow within a
bucket, and a new message gets an id above every message already listed for either of its
users: their lists keep the order in which messages were stored. Ids stay below 2**53 (exact as
Lua numbers and sorted-set scores) until about the year 19,800.
"""

from __future__ import annotations

import zlib
from typing import Final

from services.common import buckets
from services.common.buckets import spread_tags

BUCKETS: Final = buckets.BUCKETS
"""Number of buckets (services.common.buckets); ``id % BUCKETS`` is the bucket of message
``id``, so never change it on data that exists."""

BUCKET_TAGS: Final = spread_tags("mb", BUCKETS)
"""The hash tag of each bucket (without braces): ``mb<k>`` or ``mb<k>.<n>``, the k-th hashing
into the k-th of BUCKETS equal ranges of slots, so the buckets spread evenly over the masters."""

ID_WIDTH: Final = 16
"""The digits a message id counts as in the sender's stored bytes (ids stay below 10**16)."""

PENDING: Final = "pending"
"""An idempotency key's value while the send that reserved it is being stored."""

PREFIX: Final = "m:"


def bucket_tag(bucket: int) -> str:
    if not 0 <= bucket < BUCKETS:
        raise ValueError(f"bucket {bucket} is not in 0..{BUCKETS - 1}")
    return "{" + BUCKET_TAGS[bucket] + "}"


def bucket_of(first: str, second: str) -> int:
    """The bucket of the conversation between ``first`` and ``second`` (order irrelevant)."""
    a, b = sorted((first, second))
    return zlib.crc32(f"{a}:{b}".encode()) % BUCKETS


def bucket_of_id(message_id: int) -> int:
    return message_id % BUCKETS


def message_id(sequence: int, bucket: int) -> int:
    """The id of the ``sequence``-th message of ``bucket`` (the scripts compute it too)."""
    return sequence * BUCKETS + bucket


def message_prefix(bucket: int) -> str:
    """``m:{t}:message:``; the scripts append the id."""
    return f"{PREFIX}{bucket_tag(bucket)}:message:"


def conversation_prefix(bucket: int) -> str:
    """``m:{t}:conversation:``; the read scripts append ``<a>:<b>``."""
    return f"{PREFIX}{bucket_tag(bucket)}:conversation:"


def message_key(message_id: int) -> str:
    return message_prefix(bucket_of_id(message_id)) + str(message_id)


def conversation_key(first: str, second: str) -> str:
    a, b = sorted((first, second))
    return f"{conversation_prefix(bucket_of(a, b))}{a}:{b}"


def conversation_messages_key(first: str, second: str) -> str:
    return conversation_key(first, second) + ":messages"


def id_sequence_key(bucket: int) -> str:
    return f"{PREFIX}{bucket_tag(bucket)}:ids"


def outbox_stream(bucket: int) -> str:
    return f"{PREFIX}outbox:{bucket_tag(bucket)}"


def outbox_dead_letter_stream(bucket: int) -> str:
    return outbox_stream(bucket) + ":dead"


def user_tag(email: str) -> str:
    if "{" in email or "}" in email:
        raise ValueError(f"{email!r} is not a normalised email")
    return f"{{{email}}}"


def user_messages_key(email: str) -> str:
    return f"{PREFIX}user:{user_tag(email)}:messages"


def user_conversations_by_time_key(email: str) -> str:
    return f"{PREFIX}user:{user_tag(email)}:conversations_by_time"


def account_key(email: str) -> str:
    return f"{PREFIX}account:{user_tag(email)}"


def stored_bytes_key(email: str) -> str:
    return f"{PREFIX}user:{user_tag(email)}:stored_bytes"


def send_rate_key(email: str) -> str:
    return f"{PREFIX}send_rate:{user_tag(email)}"


def idempotency_key(sender: str, client_request_id: str) -> str:
    return f"{PREFIX}idempotency:send:{user_tag(sender)}:{client_request_id}"


def charge(document_bytes: int, message_id: int) -> int:
    """What a message's stored JSON of ``document_bytes`` bytes counts in its sender's quota:
    its size with the id counted as ID_WIDTH digits, so that the reservation made before the
    id exists is exact."""
    return document_bytes - len(str(message_id)) + ID_WIDTH
