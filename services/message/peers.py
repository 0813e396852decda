"""UserService over gRPC: whether a user is registered and its account (CheckUserExists), for
SendMessage and for checking tokens against their account."""

from __future__ import annotations

import logging
from typing import Final

import grpc
import grpc.aio
from missive.user.v1 import user_pb2, user_pb2_grpc

from services.common.domain import Unavailable
from services.common.sessions import AccountState

logger = logging.getLogger(__name__)

USER_SERVICE_NAME: Final[str] = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name
# CheckUserExists is a read: the channel may retry it on UNAVAILABLE (see peer_channel).
RETRY_METHODS: Final = ("CheckUserExists",)
CHECK_TIMEOUT_SECONDS: Final = 2.0


class GrpcUserDirectory:
    """Asks UserService whether an email is registered, within a deadline.

    Build the channel with ``peer_channel(addr, credentials, target="user",
    retry_service=USER_SERVICE_NAME, retry_methods=RETRY_METHODS)``.
    """

    def __init__(self, channel: grpc.aio.Channel, timeout: float = CHECK_TIMEOUT_SECONDS) -> None:
        self._stub = user_pb2_grpc.UserServiceStub(channel)
        self._timeout = timeout

    async def exists(self, email: str) -> bool:
        """Whether ``email`` is registered; Unavailable if UserService does not answer in time."""
        return await self.account(email) is not None

    async def account(self, email: str) -> AccountState | None:
        """The account registered under ``email`` (its id and token version), or None;
        Unavailable if UserService does not answer in time.

        Any failure is Unavailable: the caller can retry, and nothing was stored. Codes that
        point at a misconfiguration (credentials, allowlist) are logged as errors.
        """
        request = user_pb2.CheckUserExistsRequest(email=email)
        try:
            reply = await self._stub.CheckUserExists(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                logger.warning("UserService unreachable: %s %s", code.name, exc.details())
            else:
                logger.error("UserService refused CheckUserExists: %s %s", code.name, exc.details())
            raise Unavailable(
                "UserService is temporarily unavailable; the message was not stored"
            ) from exc
        except grpc.aio.UsageError as exc:  # the channel is closing (shutdown)
            raise Unavailable("UserService is temporarily unavailable") from exc
        if not reply.exists:
            return None
        return AccountState(reply.account_id, reply.token_version, reply.name)
