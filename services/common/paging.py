"""Page sizes and opaque page tokens shared by every list operation."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from services.common.domain import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_TOKEN_LENGTH = 512
# The largest position a page token may carry: positions are ranks and ids that Redis also
# compares as scores (doubles, exact up to 2**53), and rank arithmetic near 2**63 overflows
# Redis's 64-bit integers. A token beyond it is malformed, whatever decoded it.
MAX_OFFSET = 2**53 - 1


@dataclass(frozen=True)
class Page:
    """Where a page starts and how many items it holds."""

    offset: int
    size: int

    def next_token(self, returned: int, total: int | None = None) -> str:
        """The token of the following page; empty when this page is the last one."""
        end = self.offset + returned
        if returned < self.size or (total is not None and end >= total):
            return ""
        return encode_offset(end)


def encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o1:{offset}".encode()).decode().rstrip("=")


def parse_page(page_size: int | None, page_token: str | None) -> Page:
    """Validate paging input (0 or None = default size); InvalidArgument names the bad part."""
    size = DEFAULT_PAGE_SIZE if not page_size else page_size
    if size < 0 or size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {size}")
    if not page_token:
        return Page(0, size)
    if len(page_token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument("page_token is malformed")
    try:
        raw = base64.urlsafe_b64decode(page_token + "=" * (-len(page_token) % 4)).decode()
        prefix, _, number = raw.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument("page_token is malformed") from exc
    if prefix != "o1" or not 0 <= offset <= MAX_OFFSET or number != str(offset):
        raise InvalidArgument("page_token is malformed")
    return Page(offset, size)
