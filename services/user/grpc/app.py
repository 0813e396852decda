"""UserService gRPC adapter: protobuf requests to domain calls and back."""

from __future__ import annotations

from collections.abc import Sequence

import grpc.aio
from missive.user.v1 import user_pb2, user_pb2_grpc

from services.common.callers import peer_host
from services.common.dead_letters import AdminRpcs, DeadLetterRpcs, DeadLetters
from services.common.grpc_edge import Context, caller
from services.common.timestamps import set_proto_timestamp
from services.user.service import UserService
from services.user.wire import existence_to_proto, user_to_proto

__all__ = ["SERVICE_NAME", "UserServicer", "register"]

SERVICE_NAME: str = user_pb2.DESCRIPTOR.services_by_name["UserService"].full_name


class UserServicer(DeadLetterRpcs, user_pb2_grpc.UserServiceServicer):
    """Implements missive.user.v1.UserService over :class:`UserService`."""

    def __init__(self, service: UserService, dead_letters: DeadLetters | None = None) -> None:
        self._service = service
        self._admin = AdminRpcs(dead_letters, user_pb2)

    async def AuthenticateUser(
        self, request: user_pb2.AuthenticateUserRequest, context: Context
    ) -> user_pb2.AuthenticateUserResponse:
        result = await self._service.authenticate(
            request.email, request.password, peer_host(context.peer())
        )
        if result is None:
            return user_pb2.AuthenticateUserResponse(authenticated=False)
        reply = user_pb2.AuthenticateUserResponse(
            authenticated=True, access_token=result.access_token, token_type="Bearer"
        )
        set_proto_timestamp(reply.expires_at, result.expires_at)
        return reply

    async def CheckUserExists(
        self, request: user_pb2.CheckUserExistsRequest, context: Context
    ) -> user_pb2.CheckUserExistsResponse:
        account = await self._service.lookup(request.email)
        if account is None:
            # A record without an account id (written before ids existed) still exists.
            return user_pb2.CheckUserExistsResponse(
                exists=await self._service.exists(request.email)
            )
        return user_pb2.CheckUserExistsResponse(
            exists=True,
            account_id=account.account_id,
            token_version=account.token_version,
            name=account.name,
        )

    async def CheckUsersExist(
        self, request: user_pb2.CheckUsersExistRequest, context: Context
    ) -> user_pb2.CheckUsersExistResponse:
        found = await self._service.lookup_many(request.emails)
        return user_pb2.CheckUsersExistResponse(users=[existence_to_proto(u) for u in found])

    async def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: Context
    ) -> user_pb2.ListUsersResponse:
        users, next_token = await self._service.list_users(
            request.page_size, request.page_token, caller()
        )
        return user_pb2.ListUsersResponse(
            users=[user_to_proto(user) for user in users], next_page_token=next_token
        )

    async def GetUser(self, request: user_pb2.GetUserRequest, context: Context) -> user_pb2.User:
        return user_to_proto(await self._service.get(caller(), request.email))


def register(
    server: grpc.aio.Server, service: UserService, dead_letters: DeadLetters | None = None
) -> Sequence[str]:
    """Add the servicer to ``server``; the full service names, for health and reflection."""
    user_pb2_grpc.add_UserServiceServicer_to_server(UserServicer(service, dead_letters), server)
    return [SERVICE_NAME]
