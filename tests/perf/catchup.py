"""Catch-up rate of both relay hops, on the real system: ``python -m tests.perf.catchup``.

Starts Valkey and the four services as processes (as the e2e tests do) and runs the bench's
catch-up scenario (:mod:`tests.bench.catchup`; ``make bench`` runs it too, next to its
baselines): NotificationService and FrontendService stopped, ``--count`` messages sent to
``--receivers`` users, then each service restarted and its backlog timed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from tests.bench.catchup import catch_up, register_receiver
from tests.helpers.clients import register_and_login
from tests.helpers.system import System


async def measure(base: Path, count: int, receivers_n: int) -> dict[str, float]:
    system = System.create(base, NOTIFICATION_RETENTION="100000")
    try:
        system.start()
        await system.wait_healthy()
        senders = [await register_and_login(system, f"Sender{i}") for i in range(2)]
        receivers = [await register_receiver(system, i) for i in range(receivers_n)]
        return await catch_up(system, senders, receivers, count)
    finally:
        system.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=3000, help="messages in the backlog")
    parser.add_argument("--receivers", type=int, default=20, help="distinct receivers")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="missive-catchup-") as tmp:
        result = asyncio.run(measure(Path(tmp), args.count, args.receivers))
    first1, first2 = result["hop1_first_s"], result["hop2_first_s"]
    print(
        f"backlog {result['sent']:.0f} notifications for {args.receivers} receivers "
        f"(sent at {result['send_per_s']:.0f}/s)\n"
        f"hop 1 MessageService -> NotificationService: {result['hop1_per_s']:.0f} notifications/s "
        f"(first stored {first1:.2f}s after the restart, all after {result['hop1_s']:.2f}s)\n"
        f"hop 2 NotificationService -> FrontendService: {result['hop2_per_s']:.0f} notifications/s "
        f"(first pushed {first2:.2f}s after the restart, all after {result['hop2_s']:.2f}s)\n"
        f"dead letters: {result['dead_letters']:.0f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
