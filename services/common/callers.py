"""The client host of a gRPC call, for per-client limits (the peer, never a header)."""

from __future__ import annotations

from urllib.parse import unquote


def peer_host(peer: str | None) -> str:
    """The host of a gRPC peer (``ipv4:1.2.3.4:5``, ``ipv6:%5B::1%5D:5``, ``unix:...``)."""
    if not peer:
        return "unknown"
    kind, _, address = peer.partition(":")
    address = unquote(address)
    if kind == "ipv4":
        return address.rpartition(":")[0] or address
    if kind == "ipv6":
        host = address[1:].partition("]")[0] if address.startswith("[") else address
        return host or "unknown"
    return kind or "unknown"  # unix sockets: every local caller is one client
