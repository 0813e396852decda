"""Entry point of ``python -m services.launcher``."""

from __future__ import annotations

import sys

from services.launcher.app import main

if __name__ == "__main__":
    sys.exit(main())
