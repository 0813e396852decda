"""Account ids for tests that mint their own tokens: one fixed, valid id per email."""

from __future__ import annotations

import hashlib


def account_id_of(email: str) -> str:
    """A stable 32-hex-digit account id for ``email`` (what a stand-in UserService reports)."""
    return hashlib.sha256(email.encode()).hexdigest()[:32]
