"""The REST server's coalesced writes (services.common.rest_server._CoalescedWrites), on a
real loopback connection: what uvicorn writes in one turn of the loop leaves as one write at
the end of the turn, in order; closing sends what is pending first; aborting drops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.common.rest_server import _CoalescedWrites


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[asyncio.Transport, asyncio.StreamReader]]:
    """(the client's transport, the server's reader of what the client sends)."""
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(reader)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    try:
        yield transport, await asyncio.wait_for(accepted.get(), 5)
    finally:
        transport.abort()
        server.close()
        await server.wait_closed()


async def test_the_writes_of_one_turn_leave_together_at_its_end_in_order() -> None:
    async with connected() as (transport, peer):
        writes = _CoalescedWrites(transport, asyncio.get_running_loop())
        writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        writes.write(b"{}")
        # Nothing has reached the socket yet: the head waits for the body.
        assert writes.get_write_buffer_size() == len(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        )
        assert transport.get_write_buffer_size() == 0
        await asyncio.sleep(0)  # the end of the turn
        assert writes.get_write_buffer_size() == transport.get_write_buffer_size()
        received = await asyncio.wait_for(peer.readexactly(40), 5)
        assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        # The next turn's writes are the next write.
        writes.write(b"again")
        await asyncio.sleep(0)
        assert await asyncio.wait_for(peer.readexactly(5), 5) == b"again"


async def test_closing_sends_what_is_pending_first() -> None:
    async with connected() as (transport, peer):
        writes = _CoalescedWrites(transport, asyncio.get_running_loop())
        writes.write(b"last ")
        writes.write(b"words")
        writes.close()
        assert transport.is_closing() and writes.is_closing()
        assert await asyncio.wait_for(peer.read(), 5) == b"last words"  # then end of stream
        await asyncio.sleep(0)  # the scheduled flush finds nothing left and writes nothing


async def test_aborting_drops_what_is_pending() -> None:
    async with connected() as (transport, peer):
        writes = _CoalescedWrites(transport, asyncio.get_running_loop())
        writes.write(b"never sent")
        writes.abort()
        await asyncio.sleep(0)
        assert transport.is_closing()
        try:
            assert await asyncio.wait_for(peer.read(), 5) == b""
        except ConnectionResetError:
            pass  # an abort resets the connection


async def test_writes_to_a_transport_closed_meanwhile_are_dropped() -> None:
    async with connected() as (transport, peer):
        writes = _CoalescedWrites(transport, asyncio.get_running_loop())
        writes.write(b"sent")
        await asyncio.sleep(0)
        writes.write(b" too late")
        transport.close()  # closed under it (the watchdog closes the transport itself)
        await asyncio.sleep(0)
        assert await asyncio.wait_for(peer.read(), 5) == b"sent"
