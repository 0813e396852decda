"""Conversion from the domain values to the protobuf messages of the contract."""

from __future__ import annotations

from missive.user.v1 import user_pb2

from services.common.timestamps import set_proto_timestamp
from services.user.models import Existence, UserInfo


def user_to_proto(user: UserInfo) -> user_pb2.User:
    message = user_pb2.User(name=user.name, email=user.email)
    set_proto_timestamp(message.created_at, user.created_at)
    set_proto_timestamp(message.updated_at, user.updated_at)
    return message


def existence_to_proto(user: Existence) -> user_pb2.UserExistence:
    return user_pb2.UserExistence(
        email=user.email,
        exists=user.exists,
        account_id=user.account_id,
        token_version=user.token_version,
        name=user.name,
    )
