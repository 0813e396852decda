"""The client side of a chaos run: registered users and SendMessage operations, all recorded.

Operations go to MessageService over gRPC, as any client's would, each with a unique
``client_request_id`` and a unique nonce in its text, and a 2 s deadline. With ``retry_for``
an operation whose outcome is indeterminate (``info``) is retried with the *same*
``client_request_id`` and text until it gets a definite answer or the time is up, as the
contract advises clients to do; every attempt is recorded.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Sequence

import grpc
import grpc.aio
from missive.message.v1 import message_pb2, message_pb2_grpc

from tests.helpers.chaos.history import Attempt, History, Outcome, SendOp, classify
from tests.helpers.clients import User, register_and_login
from tests.helpers.system import System

SEND_DEADLINE_SECONDS = 2.0
CLIENT_CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    # A client that notices a restarted server quickly, so that outcomes reflect the server.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


async def make_users(system: System, count: int, prefix: str = "chaos") -> list[User]:
    """``count`` users registered and logged in through UserService's REST API."""
    gate = asyncio.Semaphore(3)  # Argon2 hashing is deliberately expensive

    async def one(n: int) -> User:
        async with gate:
            return await register_and_login(system, f"{prefix}{n}")

    return list(await asyncio.gather(*(one(n) for n in range(count))))


class Workload:
    """Sends messages between ``users`` and records each operation in ``history``."""

    def __init__(
        self,
        system: System,
        users: Sequence[User],
        history: History,
        *,
        deadline: float = SEND_DEADLINE_SECONDS,
        retry_for: float = 0.0,
        seed: int = 0,
    ) -> None:
        if len(users) < 2:
            raise ValueError("a workload needs at least two users")
        self.users = list(users)
        self.history = history
        self.deadline = deadline
        self.retry_for = retry_for
        self._rng = random.Random(seed)
        self._channel = grpc.aio.insecure_channel(
            system.grpc_addr("message"), options=list(CLIENT_CHANNEL_OPTIONS)
        )
        self._stub = message_pb2_grpc.MessageServiceStub(self._channel)
        self._done = asyncio.Condition()
        self._completed = 0
        self._by_email = {user.email: user for user in self.users}

    # -- operations ---------------------------------------------------------------------

    def new_op(self, sender: User | None = None, receiver: User | None = None) -> SendOp:
        """A recorded (invoked) operation between two distinct users, random unless given."""
        if sender is None or receiver is None:
            sender, receiver = self._rng.sample(self.users, 2)
        op = SendOp(
            index=len(self.history.ops),
            request_id=uuid.uuid4().hex,
            nonce=uuid.uuid4().hex,
            sender=sender.email,
            receiver=receiver.email,
            invoked_at=time.monotonic(),
        )
        self.history.add(op)
        return op

    async def attempt(self, op: SendOp) -> grpc.StatusCode:
        """One SendMessage RPC for ``op`` (same request id and text each time); its status."""
        request = message_pb2.SendMessageRequest(
            sender_email=op.sender,
            receiver_email=op.receiver,
            content=op.content,
            client_request_id=op.request_id,
        )
        started = time.monotonic()
        try:
            reply = await self._stub.SendMessage(
                request, metadata=self._by_email[op.sender].metadata, timeout=self.deadline
            )
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        else:
            code = grpc.StatusCode.OK
            if op.message_id is not None and op.message_id != reply.message.id:
                # The same client_request_id answered with two ids: recorded as a violation.
                op.message_id = -abs(reply.message.id)
            else:
                op.message_id = reply.message.id
        op.attempts.append(Attempt(started, time.monotonic(), code.name))
        return code

    async def run_op(self, op: SendOp) -> SendOp:
        """Run ``op`` to its outcome (retrying ``info`` outcomes while ``retry_for`` allows)."""
        try:
            while True:
                outcome = classify(await self.attempt(op))
                retry = (
                    outcome == Outcome.INFO and time.monotonic() - op.invoked_at < self.retry_for
                )
                if not retry:
                    op.outcome = outcome
                    return op
                await asyncio.sleep(self._rng.uniform(0.1, 0.4))
        finally:
            if op.outcome is None and op.attempts:
                op.outcome = Outcome.INFO  # interrupted: indeterminate, like a crashed client
            async with self._done:
                self._completed += 1
                self._done.notify_all()

    async def send(self, sender: User | None = None, receiver: User | None = None) -> SendOp:
        return await self.run_op(self.new_op(sender, receiver))

    # -- load ---------------------------------------------------------------------------

    async def run(
        self,
        ops: int,
        *,
        rate: float | None = None,
        concurrency: int = 8,
        stop: asyncio.Event | None = None,
    ) -> None:
        """``ops`` operations (fewer if ``stop`` is set first) by up to ``concurrency``
        clients, paced at ``rate`` per second."""
        gate = asyncio.Semaphore(concurrency)
        tasks: list[asyncio.Task[SendOp]] = []
        start = time.monotonic()

        async def one() -> SendOp:
            try:
                return await self.send()
            finally:
                gate.release()

        for n in range(ops):
            if stop is not None and stop.is_set():
                break
            if rate:
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)

    def start(
        self,
        ops: int,
        *,
        rate: float | None = None,
        concurrency: int = 8,
        stop: asyncio.Event | None = None,
    ) -> asyncio.Task[None]:
        """:meth:`run` in a task; ``reached(n)`` and ``completed`` follow its progress."""
        return asyncio.create_task(self.run(ops, rate=rate, concurrency=concurrency, stop=stop))

    @property
    def completed(self) -> int:
        return self._completed

    async def reached(self, completed: int, within: float = 120.0) -> None:
        """Wait until ``completed`` operations have an outcome."""
        async with asyncio.timeout(within), self._done:
            await self._done.wait_for(lambda: self._completed >= completed)

    async def close(self) -> None:
        await self._channel.close()
