"""What the service side of the REST requests ``make bench`` drives costs in process:
``python -m tests.perf.rest_reads``.

An embedded Valkey, seeded as the bench's ``rest`` scenario seeds the system (a reader with 10
conversations and 20 notifications), and each service's REST adapter operation called directly
(handler, domain service, store, redis-py; no HTTP, no validation): ``GET /list_conversations``,
``GET /list_notifications`` (page of 20), ``GET /users/{email}`` with the account check of the
token that UserService's edge makes first (its Sessions, uncached), and ``POST /messages``.
Prints, per request, the lowest mean over ``--rounds`` rounds of ``--count`` sequential calls
of the wall time and of this process's CPU time (µs: the wall time includes Valkey and the
loopback, the CPU time only the service's Python), and the Redis round trips it makes
(counted on the connection, as tests.helpers.round_trips does).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.domain import Principal
from services.common.redis import create_redis
from services.common.sessions import AccountState, Sessions
from services.message.api_rest.app import MessageRestApi
from services.message.service import MessageService
from services.message.settings import SendLimits
from services.message.store import RedisMessageStore
from services.notification.api_rest.app import NotificationRestApi
from services.notification.models import NewNotification
from services.notification.service import NotificationService
from services.notification.store import RedisNotificationStore
from services.user.api_rest.app import UserRestApi
from services.user.checked import CheckedAccounts
from services.user.models import StoredUser
from services.user.passwords import Passwords
from services.user.service import UserService
from services.user.settings import HashParams
from services.user.store import RedisUserStore
from tests.helpers.round_trips import RoundTrips
from tests.helpers.valkey import start_valkey

READER = "reader@example.com"
PEERS = [f"peer{n}@example.com" for n in range(10)]
HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def account_of(email: str) -> str:
    return f"{abs(hash(email)) % 16**16:016x}{0:016x}"


class Registered:
    """The account lookup of MessageService's send checks (Sessions over UserService in
    production, answered from its cache under load): every user of the harness."""

    async def account(self, email: str) -> AccountState | None:
        return AccountState(account_of(email), 1, email.split("@")[0])

    async def accounts(self, emails: Sequence[str]) -> Mapping[str, AccountState | None]:
        return {email: await self.account(email) for email in emails}


async def _ready() -> bool:
    return True


def _token_info(email: str) -> dict[str, Any]:
    return {"sub": email, "aid": account_of(email), "tv": 1, "exp": time.time() + 3600}


async def _lowest(
    call: Callable[[], Awaitable[Any]], count: int, rounds: int
) -> tuple[float, float]:
    """The lowest mean wall time and the lowest mean CPU time of this process (µs) per call
    over ``rounds`` rounds of ``count`` sequential calls."""
    wall = cpu = float("inf")
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            await call()
        wall = min(wall, (time.perf_counter() - start) / count)
        cpu = min(cpu, (time.process_time() - start_cpu) / count)
    return wall * 1e6, cpu * 1e6


def _requests(
    message_db: Any, notification_db: Any, user_db: Any
) -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each bench request over the given clients (DB 1, 2, 0)."""
    users = UserService(RedisUserStore(user_db), Passwords(HashParams()), _NoTokens())
    sessions = Sessions(CheckedAccounts(users), ttl_seconds=0)  # services.user.__main__
    user_api = UserRestApi(users, _ready)
    message_api = MessageRestApi(
        MessageService(
            RedisMessageStore(message_db),
            Registered(),
            limits=SendLimits(messages=10**9, window_seconds=60),
            known_users=Sessions(Registered()),
        ),
        _ready,
    )
    notification_api = NotificationRestApi(
        NotificationService(RedisNotificationStore(notification_db, retention=1000)), _ready
    )
    info = _token_info(READER)
    reader = Principal("user", READER, info["aid"], 1, info["exp"])
    body = {"sender_email": READER, "receiver_email": PEERS[0], "content": "Lunch at noon?"}

    async def get_user() -> Any:
        await sessions.check(reader)
        return await user_api.get_user(token_info=info, email=READER)

    return {
        "GET /list_conversations": lambda: message_api.list_conversations(token_info=info),
        "GET /list_notifications": lambda: notification_api.list_notifications(
            token_info=info, page_size=20
        ),
        "GET /users/{email}": get_user,
        "POST /messages": lambda: message_api.send_message(
            token_info=info,
            body=body,  # type: ignore[arg-type]
        ),
    }


class _NoTokens:
    def issue(self, email: str, account_id: str = "", token_version: int = 0) -> tuple[str, Any]:
        raise NotImplementedError


async def _seed(url: str) -> None:
    user_db, message_db, notification_db = (create_redis(url, db) for db in (0, 1, 2))
    users = RedisUserStore(user_db)
    for email in (READER, *PEERS):
        user = StoredUser(email, email, HASH, T0, T0, account_id=account_of(email))
        assert await users.create(user)
    messages = RedisMessageStore(message_db)
    for peer in PEERS:
        for sender, receiver in ((READER, peer), (peer, READER), (peer, READER)):
            outcome = await messages.send_message(
                sender,
                receiver,
                "Hi there",
                T0,
                sender_account_id=account_of(sender),
                receiver_account_id=account_of(receiver),
                claim_receiver=True,
            )
            assert outcome.message is not None, outcome
    notifications = RedisNotificationStore(notification_db, retention=1000)
    for n in range(200):
        new = NewNotification(n + 1, PEERS[n % 10], READER, T0, receiver_account_id="")
        await notifications.create(new)
    assert await notifications.claim(READER, account_of(READER))
    for client in (user_db, message_db, notification_db):
        await client.aclose()


async def measure(url: str, count: int, rounds: int) -> dict[str, tuple[float, float, int]]:
    await _seed(url)
    clients = [create_redis(url, db, health_check_interval=0) for db in (1, 2, 0)]
    timed = _requests(*clients)
    trips = [RoundTrips(url, db) for db in (1, 2, 0)]
    counted = _requests(*(t.redis for t in trips))
    results: dict[str, tuple[float, float, int]] = {}
    for name, call in timed.items():
        await counted[name]()  # connects and loads the scripts
        before = sum(t.total for t in trips)
        await counted[name]()
        round_trips = sum(t.total for t in trips) - before
        await call()
        results[name] = (*await _lowest(call, count, rounds), round_trips)
    for client in clients:
        await client.aclose()
    for counter in trips:
        await counter.aclose()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the lowest counts)")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_valkey(Path(tmp) / "valkey")
        try:
            results = asyncio.run(measure(server.url, options.count, options.rounds))
        finally:
            server.stop()
    print(f"{'request':<28} {'µs/request':>10} {'CPU µs':>8} {'round trips':>12}")
    for name, (micros, cpu, round_trips) in results.items():
        print(f"{name:<28} {micros:>10.1f} {cpu:>8.1f} {round_trips:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
