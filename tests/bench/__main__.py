"""``python -m tests.bench`` (``make bench``): run the scenarios, print the table, write JSON.

Starts an embedded Valkey and the four services from their entry points on free loopback ports,
a bare grpc.aio echo server (for the send scenario also one that writes to Valkey per call, and
for the REST scenarios a bare Starlette app) as separate processes, and drives each with the
loader process (:mod:`tests.bench.loader`). Every process it
started is stopped on exit, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.common.ports import free_port
from tests.bench import procs
from tests.bench.cluster import cluster
from tests.bench.figures import figure, table
from tests.bench.replicas import replicas
from tests.bench.rest import rest
from tests.bench.run import SCENARIOS, Bench, Options, dump, start_bench
from tests.bench.streams import streams

ALIASES = {"cpu": "send", "backlog": "send", "throughput": "send", "e2e": "latency"}
DEFAULT_OUTPUT = procs.ROOT / "tests/bench/results/latest.json"


def parse(argv: list[str] | None) -> tuple[Options, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} "
        "(aliases: cpu, backlog, throughput: send; e2e: latency)",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds of load per run (default 5)"
    )
    parser.add_argument(
        "--catchup-count", type=int, default=5000, help="messages backlogged (default 5000)"
    )
    parser.add_argument(
        "--catchup-receivers", type=int, default=20, help="their receivers (default 20)"
    )
    parser.add_argument(
        "--streams", type=int, default=2000, help="live streams held open (default 2000)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="JSON file (default tests/bench/results/latest.json)",
    )
    args = parser.parse_args(argv)
    chosen = []
    for name in (n.strip() for n in args.scenarios.split(",") if n.strip()):
        name = ALIASES.get(name, name)
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}: choose from {', '.join(SCENARIOS)}")
        if name not in chosen:
            chosen.append(name)
    ordered = tuple(n for n in SCENARIOS if n in chosen)
    options = Options(
        ordered, args.duration, args.catchup_count, args.catchup_receivers, args.streams
    )
    return options, args.output


async def run(options: Options, base: Path) -> tuple[Bench, float]:
    echo_port = free_port()
    with procs.server_process("tests.bench.echo_server", str(echo_port)) as echo:
        await procs.wait_port(echo_port, echo)
        bench = await start_bench(base, options, echo_port, echo.pid)
        started = time.monotonic()
        try:
            for name in options.scenarios:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                if name == "rest":
                    await rest(bench, base)
                elif name == "replicas":
                    await replicas(bench)
                elif name == "streams":
                    await streams(bench)
                elif name == "cluster":
                    await cluster(bench)
                else:
                    await getattr(bench, name)()
        finally:
            bench.system.close()
        return bench, time.monotonic() - started


def failed_calls(details: Any) -> int:
    """Every loader's ``errors`` in the run's details (0 in a clean run)."""
    if isinstance(details, dict):
        own = details.get("errors", 0) if isinstance(details.get("errors"), int) else 0
        return own + sum(failed_calls(v) for k, v in details.items() if k != "errors")
    if isinstance(details, list):
        return sum(failed_calls(v) for v in details)
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds through every cleanup block


def main(argv: list[str] | None = None) -> int:
    options, output = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="missive-bench-") as tmp:
        try:
            bench, elapsed = asyncio.run(run(options, Path(tmp)))
        except KeyboardInterrupt:
            print("interrupted; every process was stopped", file=sys.stderr)
            return 130
    bench.add(
        figure("all", "failed calls across every loader run", failed_calls(bench.details), "")
    )
    print(table(bench.figures))
    dump(
        output,
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_before": load_before,
                "loadavg_after": os.getloadavg(),
            },
            "options": {**options.__dict__, "scenarios": list(options.scenarios)},
            "elapsed_s": elapsed,
            "figures": [f.as_dict() for f in bench.figures],
            "details": bench.details,
        },
    )
    print(f"\nwritten to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
