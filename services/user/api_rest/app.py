"""UserService REST adapter: Connexion operations of openapi/user.yaml to domain calls."""

from __future__ import annotations

from urllib.parse import quote

from connexion.context import scope
from missive.rest._runtime import Reply, TokenInfo
from missive.rest.user import UserApi, create_app
from missive.rest.user.models import (
    LoginRequest,
    LoginResponse,
    User,
    UserCreate,
    UserList,
    UserUpdate,
)

from services.common.domain import Unauthenticated
from services.common.rest_adapter import RestAdapter, rest_app_factory
from services.common.rest_edge import principal
from services.common.timestamps import format_timestamp
from services.user.checked import take_checked
from services.user.models import UserInfo
from services.user.service import UserService

# One answer for an unknown email and a wrong password, so neither can be told apart.
INVALID_CREDENTIALS = "Invalid email or password."


def user_body(user: UserInfo) -> User:
    return {
        "name": user.name,
        "email": user.email,
        "created_at": format_timestamp(user.created_at, milliseconds=True),
        "updated_at": format_timestamp(user.updated_at, milliseconds=True),
    }


def client_host() -> str:
    """The connecting host of the current request: the TCP peer, or the client a trusted proxy
    (REST_TRUSTED_PROXIES) forwarded for; never a forwarded header from anyone else."""
    try:
        client = scope.get("client")
    except (LookupError, RuntimeError):  # outside a request
        return "unknown"
    return str(client[0]) if client else "unknown"


class UserRestApi(RestAdapter[UserService], UserApi):
    """Implements every operation of openapi/user.yaml over :class:`UserService`."""

    async def list_users(
        self, *, token_info: TokenInfo, page_size: int = 50, page_token: str | None = None
    ) -> UserList:
        # Operators only: an ordinary account may not enumerate every address.
        users, next_token = await self._service.list_users(
            page_size, page_token, principal(token_info)
        )
        return {"users": [user_body(user) for user in users], "next_page_token": next_token}

    async def create_user(self, *, body: UserCreate) -> Reply[User]:
        user = await self._service.register(
            body["name"], body["email"], body["password"], client_host()
        )
        location = f"/users/{quote(user.email, safe='@')}"
        return Reply(user_body(user), status=201, headers={"Location": location})

    async def get_user(self, *, token_info: TokenInfo, email: str) -> User:
        caller = principal(token_info)
        # The document the token check of this request read (services.user.checked): the
        # reply needs no second read of it.
        checked = take_checked(caller.name)
        return user_body(await self._service.get(caller, email, checked=checked))

    async def update_user(self, *, token_info: TokenInfo, body: UserUpdate, email: str) -> User:
        user = await self._service.update(
            principal(token_info), email, name=body.get("name"), password=body.get("password")
        )
        return user_body(user)

    async def delete_user(self, *, token_info: TokenInfo, email: str) -> None:
        await self._service.delete(principal(token_info), email)

    async def revoke_tokens(self, *, token_info: TokenInfo, email: str) -> None:
        await self._service.revoke_tokens(principal(token_info), email)

    async def login(self, *, body: LoginRequest) -> LoginResponse:
        result = await self._service.authenticate(body["email"], body["password"], client_host())
        if result is None:
            raise Unauthenticated(INVALID_CREDENTIALS)
        return {
            "authenticated": True,
            "access_token": result.access_token,
            "token_type": "Bearer",
            "expires_at": format_timestamp(result.expires_at, milliseconds=True),
        }


create_rest_app = rest_app_factory(UserRestApi, create_app)
"""The Connexion app serving openapi/user.yaml, with the shared edge."""
