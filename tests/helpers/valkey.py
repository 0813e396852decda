"""Factories for embedded Valkey servers used by the fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from services.launcher.valkey import EmbeddedValkey


def start_valkey(data_dir: Path, **kwargs: Any) -> EmbeddedValkey:
    """A started EmbeddedValkey on a free port with its AOF under ``data_dir``."""
    server = EmbeddedValkey(data_dir, **kwargs)
    server.start()
    return server


def flush_all(url: str) -> None:
    """Empty every logical database of the server at ``url``."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.flushall()
