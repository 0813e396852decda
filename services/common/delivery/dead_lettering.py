"""Dead letters: an entry the relay gives up on, copied with its reason to the dead-letter stream.

The copy keeps the original fields and adds the ``dead_letter.*`` ones below; the admin tools
(:mod:`services.common.dead_letters`) list and replay them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from redis.typing import EncodableT, FieldT

from services.common.delivery.entries import Entry, text

__all__ = [
    "DEAD_LETTER_ATTEMPTS_FIELD",
    "DEAD_LETTER_AT_FIELD",
    "DEAD_LETTER_CONSUMER_FIELD",
    "DEAD_LETTER_ID_FIELD",
    "DEAD_LETTER_OUTCOME_FIELD",
    "DEAD_LETTER_REASON_FIELD",
    "DeadLetter",
]

# Fields added to an entry when it is copied to the dead-letter stream (next to the original ones).
DEAD_LETTER_ID_FIELD: Final = "dead_letter.id"
DEAD_LETTER_REASON_FIELD: Final = "dead_letter.reason"
DEAD_LETTER_ATTEMPTS_FIELD: Final = "dead_letter.attempts"
DEAD_LETTER_CONSUMER_FIELD: Final = "dead_letter.consumer"
DEAD_LETTER_OUTCOME_FIELD: Final = "dead_letter.outcome"  # "permanent" or "unexpected"
DEAD_LETTER_AT_FIELD: Final = "dead_letter.at"  # when, in milliseconds since the Unix epoch


@dataclass(slots=True)
class DeadLetter:
    """An entry to dead-letter: why (``outcome``, ``reason``) and after how many attempts."""

    entry: Entry
    outcome: str  # "permanent" or "unexpected"
    reason: str
    attempts: int

    def fields(self, consumer: str, now_ms: str) -> dict[FieldT, EncodableT]:
        """The dead-letter stream entry: the original fields plus ``dead_letter.*``."""
        fields: dict[FieldT, EncodableT] = {text(k): v for k, v in self.entry.raw.items()}
        fields[DEAD_LETTER_ID_FIELD] = self.entry.id
        fields[DEAD_LETTER_REASON_FIELD] = self.reason
        fields[DEAD_LETTER_ATTEMPTS_FIELD] = str(self.attempts)
        fields[DEAD_LETTER_CONSUMER_FIELD] = consumer
        fields[DEAD_LETTER_OUTCOME_FIELD] = self.outcome
        fields[DEAD_LETTER_AT_FIELD] = now_ms
        return fields
