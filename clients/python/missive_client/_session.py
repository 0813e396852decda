"""The signed-in user of one client: its token, the token's expiry, and the opt-in password.

The password is kept only when the caller asked for it (``login(..., keep_password=True)``), only
in this object's memory (never on disk, never in a repr or log), so that the client can sign in
again shortly before the token expires; there is no refresh endpoint. ``logout()`` forgets it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from missive_client._errors import Unauthenticated
from missive_client._models import Token

__all__ = ["Session", "token_claims"]


@dataclass(frozen=True, slots=True)
class _Secret:
    value: str

    def __repr__(self) -> str:
        return "_Secret('***')"


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, read without verifying it (the services verify); {} if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def token_from_string(access_token: str, email: str | None = None) -> Token | None:
    """A Token for a bare access token, with email and expiry read from its claims."""
    claims = token_claims(access_token)
    subject = claims.get("sub")
    expiry = claims.get("exp")
    found_email = subject if isinstance(subject, str) and subject else email
    if not found_email:
        return None
    if isinstance(expiry, int | float) and not isinstance(expiry, bool):
        expires_at = datetime.fromtimestamp(expiry, UTC)
    else:
        expires_at = datetime.max.replace(tzinfo=UTC)
    return Token(found_email, access_token, "Bearer", expires_at)


class Session:
    """Token state shared by the transports of one client (they read it for every call)."""

    def __init__(self) -> None:
        self.token: Token | None = None
        self.raw_token: str | None = None
        self._password: _Secret | None = None

    def __repr__(self) -> str:
        email = self.token.email if self.token else None
        return f"Session(email={email!r}, can_refresh={self.can_refresh})"

    def use_token(self, access_token: str, email: str | None = None) -> None:
        """Act with an existing access token (for example one a CLI stored)."""
        self.raw_token = access_token
        self.token = token_from_string(access_token, email)
        self._password = None

    def signed_in(self, token: Token, password: str | None) -> None:
        """Record a successful login; keep ``password`` only if it is given."""
        self.token = token
        self.raw_token = token.access_token
        self._password = _Secret(password) if password is not None else None

    def clear(self) -> None:
        """Forget the token and the password."""
        self.token = None
        self.raw_token = None
        self._password = None

    @property
    def authorization(self) -> str | None:
        """The ``Bearer`` credential to send, if any."""
        return f"Bearer {self.raw_token}" if self.raw_token else None

    @property
    def can_refresh(self) -> bool:
        """True when the password was kept and a new token can be obtained."""
        return self._password is not None and self.token is not None

    @property
    def credentials(self) -> tuple[str, str]:
        """(email, password) for signing in again; Unauthenticated when none were kept."""
        if self.token is None or self._password is None:
            raise Unauthenticated("cannot renew the token: no password was kept")
        return self.token.email, self._password.value

    def needs_refresh(self, margin: float, now: datetime | None = None) -> bool:
        """True when the token can be renewed and has less than ``margin`` seconds left."""
        if not self.can_refresh or self.token is None:
            return False
        current = now or datetime.now(UTC)
        return current >= self.token.expires_at - timedelta(seconds=margin)

    def require_email(self) -> str:
        """The signed-in user's email; Unauthenticated when nobody is signed in."""
        if self.token is None:
            raise Unauthenticated("not signed in: call login() first or pass the email explicitly")
        return self.token.email
