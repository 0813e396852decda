"""Buckets: how the services' cluster layouts spread their data over the masters of a Cluster.

Each cluster layout (services.user.keys, services.notification.keys,
services.message.cluster_keys) puts every item it owns (an email, a conversation) in one of
:data:`BUCKETS` buckets, and every key of a bucket carries the bucket's hash tag, so a script
that touches one bucket touches one slot. The tags come from :func:`spread_tags`: the i-th one
hashes into the i-th of BUCKETS equal ranges of the slot space, so the buckets spread evenly
over masters that own equal ranges of slots (as ``CLUSTER ADDSLOTSRANGE`` and
``valkey-cli --cluster create`` assign them). Tags picked by name alone (``{b0}``, ``{b1}``,
...) hash anywhere: with 16 of them, 3 masters may get 9, 4 and 3.

An outbox of such a layout is one stream per bucket (:func:`bucket_outbox_configs`), each with
its dead-letter stream in its slot, read by one relay per bucket; the shell wires them with
:meth:`services.common.app.Start.bucket_outbox`, and the admin RPCs see their dead letters as
one list (:class:`services.common.bucket_dead_letters.BucketDeadLetters`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from services.common.delivery import OutboxConfig

__all__ = ["BUCKETS", "bucket_outbox_configs", "email_bucket", "spread_tags"]

BUCKETS: Final = 16
"""Buckets of every cluster layout: the most Cluster masters a service's data and outbox spread
over (one relay per bucket). Changing it moves every key (and MessageService's ids name their
bucket), so it is a layout constant, not a setting."""


def spread_tags(prefix: str, count: int = BUCKETS) -> tuple[str, ...]:
    """``count`` hash tags, the i-th hashing into the i-th of ``count`` equal ranges of slots
    (the first of ``{prefix}{i}``, ``{prefix}{i}.1``, ``{prefix}{i}.2``, ... that does), so that
    buckets spread evenly over masters that own equal ranges of slots."""
    if not 0 < count <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"count must be between 1 and {REDIS_CLUSTER_HASH_SLOTS}, got {count}")
    tags = []
    for i in range(count):
        low = i * REDIS_CLUSTER_HASH_SLOTS // count
        high = (i + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        attempt = 0
        while True:
            tag = f"{prefix}{i}" if attempt == 0 else f"{prefix}{i}.{attempt}"
            if low <= key_slot(tag.encode()) < high:
                break
            attempt += 1
        tags.append(tag)
    return tuple(tags)


def email_bucket(email: str) -> int:
    """The bucket of ``email``: the first 8 bytes of its BLAKE2b digest (UTF-8), big-endian,
    modulo BUCKETS - stable forever, and well mixed (a CRC spreads addresses that differ in a
    few characters, such as user01@ ... user40@, over a few buckets only)."""
    digest = hashlib.blake2b(email.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def bucket_outbox_configs(outbox: OutboxConfig, streams: Iterable[str]) -> tuple[OutboxConfig, ...]:
    """The outbox ``outbox`` as one stream per bucket: ``outbox``'s consumer group and tuning,
    each stream with its dead letters in ``<stream>:dead`` (the stream's slot, since the stream
    name carries its bucket's tag)."""
    return tuple(
        dataclasses.replace(outbox, stream=stream, dead_letter_stream=f"{stream}:dead")
        for stream in streams
    )
