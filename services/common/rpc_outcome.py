"""How a relay judges the outcome of one gRPC delivery: transient, permanent or unexpected.

* Transient (retried until it succeeds, never dead-lettered): UNAVAILABLE (peer down,
  restarting or shutting down, connection refused or reset), DEADLINE_EXCEEDED (peer slow or
  paused), RESOURCE_EXHAUSTED, ABORTED, CANCELLED (a call cut short by a shutdown), and
  UNAUTHENTICATED / PERMISSION_DENIED: those say the services' keys or allowlist are
  misconfigured, which an operator fixes, not that the event is bad. A connection error raised
  outside gRPC (``OSError``) is transient too.
* Permanent (dead-lettered at once): the codes an RPC documents as refusing the request for
  good, given per RPC by the caller (INVALID_ARGUMENT for both relays).
* Anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED, an undocumented code) is unexpected: the
  relay retries it a bounded number of times, then dead-letters the entry with the reason.
"""

from __future__ import annotations

from typing import Final

import grpc
import grpc.aio

from services.common.delivery import PermanentDeliveryError, TransientDeliveryError

__all__ = ["TRANSIENT_CODES", "delivery_error"]

TRANSIENT_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


def delivery_error(
    exc: grpc.aio.AioRpcError, *, permanent: frozenset[grpc.StatusCode], refused: str
) -> Exception:
    """The exception a relay handler raises for ``exc``; ``refused`` names what was refused.

    e.g. ``raise delivery_error(exc, permanent=..., refused="NotificationService refused
    message 7") from exc``.
    """
    code = exc.code()
    if code in permanent:
        return PermanentDeliveryError(f"{refused}: {code.name}: {exc.details()}")
    if code in TRANSIENT_CODES:
        return TransientDeliveryError(f"{code.name}: {exc.details()}")
    return exc
