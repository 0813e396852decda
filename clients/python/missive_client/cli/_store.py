"""Where the CLI keeps its sign-ins: a private JSON file in the config directory.

``tokens.json`` holds, per profile, the token of every user signed in with ``missive login``
and which of them is the current one::

    {"profiles": {"default": {"current": "ada@example.com",
                              "tokens": {"ada@example.com": {"access_token": "...",
                                                             "expires_at": "..."}}}}}

A ``token.json`` of an earlier version (one user) is read as the default profile's only sign-in
until the next ``missive login`` writes ``tokens.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from missive_client._config import DEFAULT_PROFILE, config_dir

__all__ = ["DEFAULT_PROFILE", "StoredToken", "TokenStore", "config_dir"]


@dataclass(frozen=True)
class StoredToken:
    """A token ``missive login`` stored (never the password)."""

    email: str
    access_token: str
    expires_at: datetime

    @property
    def expired(self) -> bool:
        """True once the token's expiry has passed."""
        return datetime.now(UTC) >= self.expires_at


def _token(email: str, data: Any) -> StoredToken | None:
    try:
        return StoredToken(
            email=email,
            access_token=str(data["access_token"]),
            expires_at=datetime.fromisoformat(str(data["expires_at"])).astimezone(UTC),
        )
    except (ValueError, KeyError, TypeError):
        return None


class TokenStore:
    """The sign-ins of one profile in ``tokens.json`` (0600 in a 0700 directory)."""

    def __init__(self, directory: Path, profile: str = DEFAULT_PROFILE) -> None:
        self.directory = directory
        self.profile = profile
        self.path = directory / "tokens.json"
        self.legacy_path = directory / "token.json"

    # -- reading ----------------------------------------------------------------------------

    def _document(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._legacy()
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _legacy(self) -> dict[str, Any]:
        try:
            data = json.loads(self.legacy_path.read_text(encoding="utf-8"))
            email = str(data["email"])
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        return {"profiles": {DEFAULT_PROFILE: {"current": email, "tokens": {email: data}}}}

    def _section(self, document: dict[str, Any]) -> dict[str, Any]:
        profiles = document.get("profiles")
        section = profiles.get(self.profile) if isinstance(profiles, dict) else None
        return section if isinstance(section, dict) else {}

    def current(self) -> str | None:
        """The email of the profile's current user (the last one signed in), if any."""
        current = self._section(self._document()).get("current")
        return current if isinstance(current, str) and current else None

    def tokens(self) -> dict[str, StoredToken]:
        """Every stored sign-in of the profile, by email."""
        tokens = self._section(self._document()).get("tokens")
        found: dict[str, StoredToken] = {}
        if isinstance(tokens, dict):
            for email, data in tokens.items():
                token = _token(str(email), data)
                if token is not None:
                    found[token.email] = token
        return found

    def load(self, email: str | None = None) -> StoredToken | None:
        """The token of ``email`` (None: the current user), or None when there is none."""
        wanted = email or self.current()
        if wanted is None:
            return None
        tokens = self.tokens()
        return tokens.get(wanted) or tokens.get(wanted.strip().lower())

    # -- writing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """The section of this profile, written back atomically under an exclusive lock."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = os.open(self.directory / ".tokens.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            document = self._document()
            profiles = document.setdefault("profiles", {})
            if not isinstance(profiles, dict):
                profiles = document["profiles"] = {}
            section = profiles.setdefault(self.profile, {})
            if not isinstance(section, dict):
                section = profiles[self.profile] = {}
            if not isinstance(section.get("tokens"), dict):
                section["tokens"] = {}
            yield section
            if not section["tokens"]:
                del profiles[self.profile]
            if profiles:
                self._write(document)
            else:
                self.path.unlink(missing_ok=True)  # nobody is signed in anywhere
            self.legacy_path.unlink(missing_ok=True)  # now part of tokens.json
        finally:
            os.close(lock)

    def _write(self, document: dict[str, Any]) -> None:
        """Write atomically: a private temporary file renamed over the old one."""
        temporary = self.path.with_name(f".tokens.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
            os.chmod(temporary, 0o600)  # in case the file existed with wider permissions
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def save(self, token: StoredToken, *, make_current: bool = True) -> None:
        """Store ``token`` (replacing that user's earlier one); its user becomes the current
        one if ``make_current`` or when there is none."""
        with self._editing() as section:
            section["tokens"][token.email] = {
                "access_token": token.access_token,
                "expires_at": token.expires_at.isoformat(),
            }
            if make_current or section.get("current") not in section["tokens"]:
                section["current"] = token.email

    def clear(self, email: str | None = None) -> str | None:
        """Forget the sign-in of ``email`` (None: the current user); the email, or None."""
        with self._editing() as section:
            tokens: dict[str, Any] = section["tokens"]
            wanted = email or section.get("current")
            if isinstance(wanted, str) and wanted not in tokens:
                wanted = wanted.strip().lower()
            if not isinstance(wanted, str) or wanted not in tokens:
                return None
            del tokens[wanted]
            if section.get("current") == wanted:
                section.pop("current", None)
            return wanted

    def clear_all(self) -> list[str]:
        """Forget every sign-in of the profile; the emails that were stored."""
        with self._editing() as section:
            removed = sorted(section["tokens"])
            section["tokens"].clear()
            section.pop("current", None)
            return removed
