"""Where the CLI keeps the signed-in user's token: a private JSON file in the config directory."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["StoredToken", "TokenStore", "config_dir"]


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/missive``, else ``~/.config/missive``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "missive"


@dataclass(frozen=True)
class StoredToken:
    """The token ``missive login`` stored (never the password)."""

    email: str
    access_token: str
    expires_at: datetime

    @property
    def expired(self) -> bool:
        """True once the token's expiry has passed."""
        return datetime.now(UTC) >= self.expires_at


class TokenStore:
    """Reads and writes ``token.json`` with owner-only permissions (0600 in a 0700 directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "token.json"

    def load(self) -> StoredToken | None:
        """The stored token, or None when there is none or the file is unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return StoredToken(
                email=str(data["email"]),
                access_token=str(data["access_token"]),
                expires_at=datetime.fromisoformat(str(data["expires_at"])).astimezone(UTC),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, token: StoredToken) -> None:
        """Write atomically: a private temporary file renamed over the old one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        document = {
            "email": token.email,
            "access_token": token.access_token,
            "expires_at": token.expires_at.isoformat(),
        }
        temporary = self.path.with_name(f".token.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
            os.chmod(temporary, 0o600)  # in case the file existed with wider permissions
            os.replace(temporary, self.path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def clear(self) -> bool:
        """Delete the stored token; False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
