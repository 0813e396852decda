"""UserService's stored form: the JSON document of a user record."""

from __future__ import annotations

import json
from typing import Any

from services.common import json_text
from services.common.timestamps import format_timestamp, parse_timestamp
from services.user.models import StoredUser

__all__ = ["decode_user", "encode_user"]


def encode_user(user: StoredUser) -> str:
    """The stored JSON: name, email, password (the hash), times[, id, token_version][, role]."""
    document: dict[str, Any] = {
        "name": user.name,
        "email": user.email,
        "password": user.password_hash,
        "created_at": format_timestamp(user.created_at, milliseconds=True),
        "updated_at": format_timestamp(user.updated_at, milliseconds=True),
    }
    if user.account_id:
        document["id"] = user.account_id
        document["token_version"] = user.token_version
    if user.role:
        document["role"] = user.role
    return json.dumps(document, separators=(",", ":"))


def decode_user(raw: str) -> StoredUser:
    """The user stored as ``raw``, which it keeps as its revision (for compare-and-set)."""
    data: dict[str, Any] = json_text.loads(raw)
    return StoredUser(
        name=str(data["name"]),
        email=str(data["email"]),
        password_hash=str(data["password"]),
        created_at=parse_timestamp(str(data["created_at"])),
        updated_at=parse_timestamp(str(data["updated_at"])),
        account_id=str(data.get("id", "")),
        token_version=int(data.get("token_version", 1)),
        role=str(data.get("role", "")),
        revision=raw,
    )
