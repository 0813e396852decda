"""The AOF window of the embedded Valkey (``appendfsync everysec``), for tests that SIGKILL it.

A write acknowledged less than 2 s before the server process dies may be lost: while a
background fsync is still running (a slow disk), Valkey postpones the AOF's write for up to
2 s and keeps answering (the README's Guarantees, "Valkey killed"). A test that expects an
acknowledged write to survive a kill waits this long between the two.
"""

from __future__ import annotations

from typing import Final

AOF_WINDOW_SECONDS: Final = 2.5
