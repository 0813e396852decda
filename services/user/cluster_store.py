"""UserService's storage on a Valkey Cluster: the cluster layout of services.user.keys.

The same operations as :class:`services.user.store.RedisUserStore`, with the same guarantees;
every key of an email carries its bucket's hash tag, so each script touches one slot. What
changes shape (documented in the service README, Cluster layout):

- a page of users merges the bucket indexes: same order (email) and pagination (ranks), read
  with commands per bucket rather than one script, so it is not a snapshot of one instant;
- sign-in admission runs as two scripts (the client's slot, then the account's), the client's
  failure reserved first and given back if the account refuses: a crash between the two leaves
  the client's counter one too high until its window ends (stricter, never looser);
- account ids come from a counter per bucket: they sort by creation among the accounts of one
  email (all that MessageService and NotificationService compare), not across emails.
"""

from __future__ import annotations

import heapq
import logging
import math
import secrets
from collections.abc import Sequence
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster

from services.common.metrics import OutboxMetrics
from services.user import keys, lua
from services.user.models import Admission, LoginPolicy, StoredUser
from services.user.records import decode_user
from services.user.store import UserStoreBase, _text

__all__ = ["ClusterUserStore"]

logger = logging.getLogger(__name__)

_OUTBOXES: Final = tuple(
    OutboxMetrics(keys.cluster_accounts_outbox(i)) for i in range(keys.BUCKETS)
)


class ClusterUserStore(UserStoreBase):
    """Users and sign-in counters on a Valkey Cluster (keys ``u:...``, see services.user.keys)."""

    _layout = "redis cluster"

    def __init__(self, redis: RedisCluster) -> None:
        super().__init__(redis)
        self._client_admit = redis.register_script(lua.CLIENT_ADMIT)
        self._client_refund = redis.register_script(lua.CLIENT_REFUND)
        self._account_admit = redis.register_script(lua.ACCOUNT_ADMIT)
        self._account_succeeded = redis.register_script(lua.ACCOUNT_SUCCEEDED)

    def _user_key(self, email: str) -> str:
        return keys.cluster_user_key(email)

    def _register_key(self, client: str) -> str:
        return keys.cluster_register_key(client)

    def _outbox(self, email: str) -> OutboxMetrics:
        return _OUTBOXES[keys.bucket(email)]

    async def _documents(self, keys: list[str]) -> list[Any]:
        documents: list[Any] = await self._redis.mget_nonatomic(keys)
        return documents

    async def new_account_id(self, email: str) -> str:
        """A fresh account id for ``email``: 12 hex digits of its bucket's counter, 4 of the
        bucket number (so no two buckets give the same id), 16 random ones. Later accounts of
        one email sort after earlier ones (one bucket, one counter that never decreases)."""
        sequence = int(await self._redis.incr(keys.cluster_account_ids(email)))
        return f"{sequence:012x}{keys.bucket(email):04x}{secrets.token_hex(8)}"

    async def list_page(self, offset: int, size: int) -> tuple[list[StoredUser], int, int]:
        """Users at ranks [offset, offset + size) in email order over every bucket; also how
        many ranks were read and the total number of users (an index entry without a record
        is skipped, as in the standalone layout). See :meth:`_page_emails` for the ranks."""
        indexes = [keys.cluster_users_index(i) for i in range(keys.BUCKETS)]
        counts = [int(n) for n in await self._pipeline(lambda pipe, k: pipe.zcard(k), indexes)]
        total = sum(counts)
        if size < 1 or offset >= total:
            return [], 0, total
        emails = await self._page_emails(indexes, counts, offset, size)
        if not emails:
            return [], 0, total
        documents = await self._redis.mget_nonatomic(
            [keys.cluster_user_key(email) for email in emails]
        )
        users = [decode_user(_text(raw)) for raw in documents if raw is not None]
        return users, len(emails), total

    async def _page_emails(
        self, indexes: Sequence[str], counts: Sequence[int], offset: int, size: int
    ) -> list[str]:
        """The emails at global ranks [offset, offset + size) of the bucket indexes.

        Emails spread evenly over buckets, so bucket b holds about offset * n_b / total of the
        first ``offset``: each bucket's window of ranks around that guess is read (one command
        per bucket, sent together) and the windows merged. The k-th merged email has global
        rank sum(window starts) + k as long as it is not below the first email of a window
        that starts after rank 0 nor above the last email of a window that ends before its
        bucket does; if a page email falls outside those bounds, the windows are widened
        (four times) and read again - at worst until they cover every bucket. A page deep in a
        large index thus reads about 16 * (size + a few * sqrt(offset)) emails, not 16 * offset.
        """
        total = sum(counts)
        margin = size + 2 * math.isqrt(offset) + 8
        while True:
            windows = []
            for count in counts:
                guess = offset * count // total
                windows.append((max(0, guess - margin), min(count, guess + size + margin)))
            wanted = [i for i, (low, high) in enumerate(windows) if high > low]
            ranges = [(indexes[i], windows[i][0], windows[i][1] - 1) for i in wanted]
            read = await self._pipeline(lambda pipe, at: pipe.zrange(*at), ranges)
            heads = {i: [_text(e) for e in r] for i, r in zip(wanted, read, strict=True)}
            merged = list(heapq.merge(*heads.values()))
            covered = all(w == (0, n) for w, n in zip(windows, counts, strict=True))
            if covered:  # every email of every bucket was read: the ranks are exact
                return merged[offset : offset + size]
            start = offset - sum(low for low, _ in windows)
            page = merged[start : start + size] if start >= 0 else []
            if page and len(page) == min(size, total - offset):
                floors = [heads[i][0] for i in wanted if windows[i][0] > 0 and heads[i]]
                ceilings = [heads[i][-1] for i in wanted if windows[i][1] < counts[i] and heads[i]]
                if page[0] >= max(floors, default=page[0]) and page[-1] <= min(
                    ceilings, default=page[-1]
                ):
                    return page
            margin *= 4

    async def _pipeline(self, command: Any, items: Sequence[Any]) -> list[Any]:
        """``command(pipe, item)`` for each item, sent together (grouped by node)."""
        if not items:
            return []
        pipe = self._redis.pipeline()
        for item in items:
            command(pipe, item)
        replies: list[Any] = await pipe.execute()
        return replies

    @staticmethod
    def script_keys(script: str, email: str, client: str = "") -> list[str]:
        """The KEYS each script gets for ``email`` (and ``client``): one slot per script."""
        index = keys.bucket(email)
        if script == "create":
            return [keys.cluster_user_key(email), keys.cluster_users_index(index)]
        if script == "replace":
            return [keys.cluster_user_key(email)]
        if script == "delete":
            return [
                keys.cluster_user_key(email),
                keys.cluster_users_index(index),
                keys.cluster_accounts_outbox(index),
                keys.cluster_account_key(email),
                keys.cluster_known_clients_key(email),
            ]
        if script == "account":  # ACCOUNT_ADMIT, ACCOUNT_SUCCEEDED
            return [
                keys.cluster_failures_key(email, client),
                keys.cluster_account_key(email),
                keys.cluster_known_clients_key(email),
            ]
        if script == "client":  # CLIENT_ADMIT, CLIENT_REFUND
            return [keys.cluster_client_key(client)]
        raise ValueError(f"no script {script!r}")

    async def admit_login(self, email: str, client: str, policy: LoginPolicy) -> Admission:
        """Whether a password may be checked now. The client's failure is reserved first (its
        own slot), then the account's limits are checked and reserved (the email's slot); if
        the account refuses, the client's reservation is given back."""
        [client_key] = self.script_keys("client", email, client)
        reply = await self._client_admit(
            keys=[client_key], args=[policy.client_failures, policy.client_window_seconds]
        )
        if int(reply[0]) != 1:
            return Admission(False, int(reply[1]), _text(reply[2]))
        reply = await self._account_admit(
            keys=self.script_keys("account", email, client),
            args=[
                policy.pair_failures,
                policy.pair_window_seconds,
                policy.account_free_failures,
                policy.account_base_delay_ms,
                policy.account_max_delay_ms,
                policy.account_window_seconds,
                keys.clean_client(client),
            ],
        )
        if int(reply[0]) == 1:
            return Admission(True)
        await self._client_refund(keys=[client_key], args=[])
        return Admission(False, int(reply[1]), _text(reply[2]))

    async def login_succeeded(self, email: str, client: str, policy: LoginPolicy) -> None:
        """Undo the failure counted at admission (account first, then client), reset the
        account's back-off and remember the client as one the account signs in from."""
        await self._account_succeeded(
            keys=self.script_keys("account", email, client),
            args=[keys.clean_client(client), policy.known_clients, policy.known_client_seconds],
        )
        await self._client_refund(keys=self.script_keys("client", email, client), args=[])
