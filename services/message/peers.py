"""UserService over gRPC: whether users are registered and their accounts (CheckUsersExist for
a message's sender and receiver together, CheckUserExists for one), for SendMessage, for
checking tokens against their account and for erasure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Final, NoReturn

import grpc
import grpc.aio
from missive.user.v1 import user_pb2, user_pb2_grpc

from services.common.domain import Unavailable
from services.common.sessions import AccountState

logger = logging.getLogger(__name__)

USER_SERVICE_NAME: Final[str] = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
# Both checks are reads: the channel may retry them on UNAVAILABLE (see peer_channel).
RETRY_METHODS: Final = ("CheckUserExists", "CheckUsersExist")
CHECK_TIMEOUT_SECONDS: Final = 2.0
MAX_BATCH: Final = 100
"""The most emails UserService answers in one CheckUsersExist call."""


def _unavailable(method: str, exc: grpc.aio.AioRpcError) -> NoReturn:
    """Any failure is Unavailable: the caller can retry, and nothing was stored. Codes that
    point at a misconfiguration (credentials, allowlist) are logged as errors."""
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        logger.warning("UserService unreachable: %s %s", code.name, exc.details())
    else:
        logger.error("UserService refused %s: %s %s", method, code.name, exc.details())
    raise Unavailable("UserService is temporarily unavailable; the message was not stored") from exc


class GrpcUserDirectory:
    """Asks UserService whether emails are registered, within a deadline.

    Build the channel with ``peer_channel(addr, credentials, target="user",
    retry_service=USER_SERVICE_NAME, retry_methods=RETRY_METHODS)``.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout
        self._batch = True  # False once UserService answered UNIMPLEMENTED (an older one)

    async def exists(self, email: str) -> bool:
        """Whether ``email`` is registered; Unavailable if UserService does not answer in time."""
        return await self.account(email) is not None

    async def account(self, email: str) -> AccountState | None:
        """The account registered under ``email`` (its id and token version), or None;
        Unavailable if UserService does not answer in time."""
        request = user_pb2.CheckUserExistsRequest(email=email)
        try:
            reply = await self._stub.CheckUserExists(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            _unavailable("CheckUserExists", exc)
        except grpc.aio.UsageError as exc:  # the channel is closing (shutdown)
            raise Unavailable("UserService is temporarily unavailable") from exc
        if not reply.exists:
            return None
        return AccountState(reply.account_id, reply.token_version, reply.name)

    async def accounts(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        """The account registered under each of ``emails`` (None where there is none), in one
        CheckUsersExist call per 100 emails; one CheckUserExists per email from a UserService
        that does not know CheckUsersExist yet. Unavailable as :meth:`account`."""
        found: dict[str, AccountState | None] = {}
        for start in range(0, len(emails), MAX_BATCH):
            chunk = emails[start : start + MAX_BATCH]
            found.update(await self._chunk(chunk) if self._batch else await self._one_by_one(chunk))
        return found

    async def _chunk(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        request = user_pb2.CheckUsersExistRequest(emails=emails)
        try:
            reply = await self._stub.CheckUsersExist(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                _unavailable("CheckUsersExist", exc)
            logger.warning("UserService has no CheckUsersExist; checking users one by one")
            self._batch = False
            return await self._one_by_one(emails)
        except grpc.aio.UsageError as exc:
            raise Unavailable("UserService is temporarily unavailable") from exc
        if len(reply.users) != len(emails):
            logger.error("CheckUsersExist answered %d of %d emails", len(reply.users), len(emails))
            raise Unavailable("UserService gave an incomplete answer; the message was not stored")
        # Keyed by the email asked about (UserService answers in request order).
        return {
            email: AccountState(user.account_id, user.token_version, user.name)
            if user.exists
            else None
            for email, user in zip(emails, reply.users, strict=True)
        }

    async def _one_by_one(self, emails: Sequence[str]) -> dict[str, AccountState | None]:
        states = await asyncio.gather(*(self.account(email) for email in emails))
        return dict(zip(emails, states, strict=True))
