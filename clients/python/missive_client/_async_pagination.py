"""Auto-paginating iterators over the list operations.

The blocking twin ``_pagination.py`` is generated from this file by ``python -m codegen``
(``codegen/sdk_sync.py``), so edit this one.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Generic, TypeVar

from missive_client._models import Page

__all__ = ["AsyncPager"]

T = TypeVar("T")


class AsyncPager(Generic[T]):
    """Iterates (``async for``) over every item of a list operation, fetching pages as it goes.

    Nothing is fetched until iteration starts; each new iteration starts again from
    ``page_token`` (the first page unless the listing was given a saved token). Errors of a
    page fetch are raised from the iteration. ``pages()`` yields whole pages (for their tokens
    or, on notifications, ``unread_count``).

    Resuming: ``next_page_token`` is the token of the page after the last one fetched ("" once
    the listing is exhausted). Save it after a whole page, then pass it as ``page_token=`` to
    the list call (or to ``starting_at``) to go on from the next page, in this process or
    another.
    """

    def __init__(self, fetch: Callable[[str], Awaitable[Page[T]]], page_token: str = "") -> None:
        self._fetch = fetch
        self._start = page_token
        self._next: str | None = None

    @property
    def page_token(self) -> str:
        """The token this listing starts at ("" for the first page)."""
        return self._start

    @property
    def next_page_token(self) -> str | None:
        """The last fetched page's ``next_page_token``: where to resume after it.

        ``None`` until a page has been fetched; "" when that page was the last one.
        """
        return self._next

    def _fetched(self, page: Page[T]) -> Page[T]:
        self._next = page.next_page_token
        return page

    async def __aiter__(self) -> AsyncGenerator[T, None]:
        async with aclosing(self.pages()) as pages:
            async for page in pages:
                for item in page.items:
                    yield item

    async def pages(self) -> AsyncGenerator[Page[T], None]:
        """Every page in order, until one has an empty ``next_page_token``."""
        token = self._start
        seen: set[str] = set()
        while True:
            page = self._fetched(await self._fetch(token))
            yield page
            token = page.next_page_token
            if not token or token in seen:  # a repeated token would loop forever
                return
            seen.add(token)

    async def first_page(self) -> Page[T]:
        """Only the first page (one request)."""
        return self._fetched(await self._fetch(self._start))

    def starting_at(self, page_token: str) -> AsyncPager[T]:
        """The same listing, resumed at a ``next_page_token`` an earlier page returned.

        The same as passing ``page_token=`` to the list call.
        """
        return AsyncPager(self._fetch, page_token)

    async def to_list(self, limit: int | None = None) -> list[T]:
        """The items as a list: all of them, or the first ``limit``."""
        items: list[T] = []
        if limit is not None and limit <= 0:
            return items
        async with aclosing(self.__aiter__()) as iterator:
            async for item in iterator:
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
        return items
