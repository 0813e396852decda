"""Live SubscribeNotifications streams that record every notification id they yield.

Each :class:`LiveStream` is one user's stream to FrontendService. When it ends (the service
was killed, stopped or shut down), it is opened again after a short backoff, as the SDK's
``watch`` does; each opening is a :class:`Connection` with the ids it carried, in order.
FrontendService replays the user's unread notifications on every opening, so ids repeat
*across* connections and are deduped as the SDK does (``first_seen``); an id repeated
*within* one connection is a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

import grpc
import grpc.aio
from missive.frontend.v1 import frontend_pb2, frontend_pb2_grpc
from missive.notification.v1 import notification_pb2

from tests.helpers.chaos.workload import CLIENT_CHANNEL_OPTIONS
from tests.helpers.clients import User
from tests.helpers.system import System

_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 1.0


@dataclass
class Connection:
    """One opening of a stream: when, what it carried, and how it ended."""

    opened_at: float
    ids: list[str] = field(default_factory=list)
    ended_at: float | None = None
    end_code: str | None = None  # the status that ended it; None while open

    def repeats(self) -> dict[str, int]:
        """Ids this connection carried more than once, with their count."""
        counts: dict[str, int] = {}
        for nid in self.ids:
            counts[nid] = counts.get(nid, 0) + 1
        return {nid: n for nid, n in counts.items() if n > 1}


@dataclass
class LiveStream:
    """A user's live notification stream, reconnecting after every outage."""

    system: System
    user: User
    connections: list[Connection] = field(default_factory=list)
    first_seen: dict[str, float] = field(default_factory=dict)  # notification id -> when
    message_of: dict[str, int] = field(default_factory=dict)  # notification id -> message id
    receivers: dict[str, str] = field(default_factory=dict)  # notification id -> receiver
    message_ids: set[int] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def email(self) -> str:
        return self.user.email

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stream {self.email}")

    async def wait_for(self, ids: set[str], within: float) -> bool:
        """Until every id of ``ids`` was yielded; False if ``within`` seconds passed first."""
        deadline = time.monotonic() + within
        while not ids <= self.first_seen.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True

    async def wait_message(self, message_id: int, within: float) -> bool:
        """Until the notification of ``message_id`` was yielded; False after ``within`` s."""
        deadline = time.monotonic() + within
        while message_id not in self.message_ids:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True

    async def _run(self) -> None:
        attempt = 0
        async with grpc.aio.insecure_channel(
            self.system.grpc_addr("frontend"), options=list(CLIENT_CHANNEL_OPTIONS)
        ) as channel:
            stub = frontend_pb2_grpc.FrontendServiceStub(channel)
            while True:
                connection = Connection(time.monotonic())
                call = stub.SubscribeNotifications(
                    frontend_pb2.SubscribeNotificationsRequest(email=self.email),
                    metadata=self.user.metadata,
                )
                self.connections.append(connection)
                try:
                    async for item in call:
                        assert isinstance(item, notification_pb2.Notification)
                        self._record(connection, item)
                    connection.end_code = "OK"
                except grpc.aio.AioRpcError as exc:
                    connection.end_code = exc.code().name
                finally:
                    connection.ended_at = time.monotonic()
                    call.cancel()
                if time.monotonic() - connection.opened_at > 5:
                    attempt = 0
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt) * random.uniform(0.5, 1)
                attempt += 1
                await asyncio.sleep(delay)

    def _record(self, connection: Connection, item: notification_pb2.Notification) -> None:
        connection.ids.append(item.id)
        if item.id not in self.first_seen:
            self.first_seen[item.id] = time.monotonic()
            self.message_of[item.id] = item.message_id
            self.receivers[item.id] = item.receiver_email
            self.message_ids.add(item.message_id)
        self._changed.set()

    def end_codes(self) -> dict[str, int]:
        """How the connections that ended did so (status code -> count)."""
        counts: dict[str, int] = {}
        for connection in self.connections:
            if connection.end_code is not None:
                counts[connection.end_code] = counts.get(connection.end_code, 0) + 1
        return counts

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def open_streams(system: System, users: list[User]) -> list[LiveStream]:
    """One live stream per user (the caller confirms they are open, e.g. with a first message)."""
    streams = [LiveStream(system, user) for user in users]
    for stream in streams:
        stream.start()
    return streams


def end_codes(streams: list[LiveStream]) -> dict[str, int]:
    """How the connections of all ``streams`` ended (status code -> count)."""
    total: dict[str, int] = {}
    for stream in streams:
        for code, count in stream.end_codes().items():
            total[code] = total.get(code, 0) + count
    return dict(sorted(total.items()))
