"""A minimal typed implementation of one generated servicer and one generated REST interface.

It exists to prove the generated code is implementable under mypy --strict and serves real
calls; its storage is a dict because the generated layers, not a service, are under test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from connexion.exceptions import ProblemException
from google.protobuf.timestamp_pb2 import Timestamp
from missive.rest._runtime import Reply, TokenInfo
from missive.rest.user import UserApi
from missive.rest.user.models import (
    HealthStatus,
    LoginRequest,
    LoginResponse,
    User,
    UserCreate,
    UserList,
    UserUpdate,
)
from missive.user.v1 import user_pb2, user_pb2_grpc


class SampleUserServicer(user_pb2_grpc.UserServiceServicer):
    """Answers CheckUserExists from a fixed set; other RPCs keep the generated UNIMPLEMENTED."""

    def __init__(self, emails: set[str]) -> None:
        self.emails = emails

    async def CheckUserExists(
        self, request: user_pb2.CheckUserExistsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.CheckUserExistsResponse:
        return user_pb2.CheckUserExistsResponse(exists=request.email in self.emails)

    async def CheckUsersExist(
        self, request: user_pb2.CheckUsersExistRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.CheckUsersExistResponse:
        return user_pb2.CheckUsersExistResponse(
            users=[
                user_pb2.UserExistence(email=email, exists=email in self.emails)
                for email in request.emails
            ]
        )

    async def AuthenticateUser(
        self, request: user_pb2.AuthenticateUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.AuthenticateUserResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the sample")

    async def ListUsers(
        self, request: user_pb2.ListUsersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.ListUsersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the sample")

    async def GetUser(
        self, request: user_pb2.GetUserRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.User:
        if request.email not in self.emails:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no user {request.email}")
        created = Timestamp()
        created.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
        return user_pb2.User(
            name="Sample", email=request.email, created_at=created, updated_at=created
        )

    async def ListDeadLetters(
        self, request: user_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.ListDeadLettersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the sample")

    async def ReplayDeadLetters(
        self,
        request: user_pb2.ReplayDeadLettersRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> user_pb2.ReplayDeadLettersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the sample")

    async def DropDeadLetters(
        self, request: user_pb2.DropDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> user_pb2.DropDeadLettersResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the sample")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class SampleUserApi(UserApi):
    """Every REST operation of openapi/user.yaml over a dict."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    def _get(self, email: str) -> User:
        if email not in self.users:
            raise ProblemException(status=404, title="Not Found", detail=f"no user {email}")
        return self.users[email]

    async def create_user(self, *, body: UserCreate) -> Reply[User]:
        if body["email"] in self.users:
            raise ProblemException(status=409, title="Conflict", detail="email taken")
        now = _now()
        user: User = {
            "name": body["name"],
            "email": body["email"],
            "created_at": now,
            "updated_at": now,
        }
        self.users[body["email"]] = user
        return Reply(user, headers={"Location": f"/users/{body['email']}"})

    async def list_users(
        self, *, token_info: TokenInfo, page_size: int = 50, page_token: str | None = None
    ) -> UserList:
        return {
            "users": sorted(self.users.values(), key=lambda u: u["email"])[:page_size],
            "next_page_token": "",
        }

    async def get_user(self, *, token_info: TokenInfo, email: str) -> User:
        return self._get(email)

    async def update_user(self, *, token_info: TokenInfo, body: UserUpdate, email: str) -> User:
        user = self._get(email)
        if "name" in body:
            user["name"] = body["name"]
        user["updated_at"] = _now()
        return user

    async def delete_user(self, *, token_info: TokenInfo, email: str) -> None:
        self._get(email)
        del self.users[email]

    async def revoke_tokens(self, *, token_info: TokenInfo, email: str) -> None:
        self._get(email)

    async def login(self, *, body: LoginRequest) -> LoginResponse:
        raise ProblemException(
            status=401, title="Unauthorized", detail="Invalid email or password."
        )

    async def health(self) -> Reply[HealthStatus]:
        return Reply({"status": "SERVING"})
