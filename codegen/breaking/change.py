"""One breaking change, as both diffs report it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Change:
    """One breaking change: where it is, which element, and what happened to it."""

    file: str
    line: int
    element: str
    what: str

    def render(self) -> str:
        return f"{self.file}:{self.line}: {self.what}\n      element: {self.element}"
