"""``python -m services.launcher``: check ports, create keys, start Valkey and the services.

Exit codes: 0 after Ctrl-C/SIGTERM, 1 when a service (or Valkey) exits by itself or does not
become healthy in time, 2 when it cannot start at all (a busy port, a bad variable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.common.auth import ensure_keys
from services.common.errors import StartupError
from services.common.settings import CLUSTER_SCHEME, cluster_nodes, redact_url
from services.launcher.config import CLUSTER_MASTERS, MAX_REPLICAS, LaunchConfig
from services.launcher.endpoints import render_endpoints
from services.launcher.health import wait_healthy
from services.launcher.output import Console
from services.launcher.preflight import check_ports
from services.launcher.supervisor import Supervisor, describe_exit
from services.launcher.valkey import EmbeddedValkey, ValkeyBinaryNotFound, ValkeyStartError
from services.launcher.valkey_cluster import EmbeddedValkeyCluster

__all__ = ["launch", "main", "parse_args"]

_VALKEY_POLL_SECONDS = 0.5
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"{raw} is not between 0 and 86400 seconds")
    return value


def _replicas(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if not 1 <= value <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and {MAX_REPLICAS}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (every port and address comes from the services' variables)."""
    parser = argparse.ArgumentParser(
        prog="python -m services.launcher",
        description=(
            "Start Missive on this machine: an embedded Valkey (unless REDIS_URL is set; with "
            "--cluster, a 3-master Valkey Cluster unless REDIS_CLUSTER_NODES is set) and "
            "the user, message, notification and frontend services, until Ctrl-C. Ports and "
            "addresses come from the services' environment variables (USER_REST_PORT, ...; "
            "VALKEY_PORT for the embedded Valkey)."
        ),
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".data"),
        help="where Valkey's AOF (valkey/) and the signing keys (keys/, unless KEYS_DIR is set) "
        "live (default: .data)",
    )
    parser.add_argument(
        "--no-valkey",
        action="store_true",
        help="do not start Valkey; use REDIS_URL (default redis://127.0.0.1:6379)",
    )
    parser.add_argument(
        "--replicas",
        type=_replicas,
        default=None,
        help="processes of each service (the web inbox: one), replica k on each port + "
        "(k-1) x 100, peers given every address (default: MISSIVE_REPLICAS, else 1)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        default=None,
        help=f"start an embedded {CLUSTER_MASTERS}-master Valkey Cluster (on VALKEY_PORT and "
        "the next ports, data in DATA_DIR/valkey-cluster) and run every service in cluster "
        "mode; REDIS_CLUSTER_NODES=host:port,... uses an existing cluster instead "
        "(default: MISSIVE_CLUSTER, else off)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=60.0,
        help="seconds to wait for every service to report SERVING (default: 60)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run until Ctrl-C; the exit code."""
    env = os.environ if environ is None else environ
    args = parse_args(argv)
    console = Console.for_process(env)
    try:
        config = LaunchConfig.from_env(
            env,
            data_dir=args.data_dir,
            no_valkey=args.no_valkey,
            health_timeout=args.timeout,
            replicas=args.replicas,
            cluster=args.cluster,
        )
        check_ports(config.ports())
    except StartupError as exc:
        console.error(str(exc))
        return 2
    try:
        return asyncio.run(launch(config, console, env))
    except KeyboardInterrupt:  # before the signal handlers were installed: nothing runs yet
        return 130


def _install_signal_handlers(
    stop: asyncio.Event, force: asyncio.Event, console: Console
) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        if not stop.is_set():
            console.info(f"received {sig.name}; stopping")
            stop.set()
        elif not force.is_set():
            console.info(f"received {sig.name} again; killing the services")
            force.set()

    installed = []
    for sig in _STOP_SIGNALS:
        try:
            loop.add_signal_handler(sig, handle, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread: the caller stops us through the events
        installed.append(sig)
    return installed


def _redis_problem(url: str) -> str | None:
    if url.startswith(f"{CLUSTER_SCHEME}://"):
        return _cluster_problem(url)
    client = redis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def _cluster_problem(url: str) -> str | None:
    """None when a seed node answers and reports ``cluster_state:ok``, else why not."""
    seeds = cluster_nodes("REDIS_CLUSTER_NODES", url)
    problem = "no node given"
    for host, port in seeds.nodes:
        client = redis.Redis(
            host=host,
            port=port,
            username=seeds.username,
            password=seeds.password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )
        try:
            info = client.cluster("INFO")
        except redis.RedisError as exc:
            problem = f"{host}:{port}: {type(exc).__name__}: {exc}"
            continue
        finally:
            client.close()
        state = info.get("cluster_state") if isinstance(info, dict) else None
        if state == "ok" or "cluster_state:ok" in str(info):
            return None
        problem = f"{host}:{port} reports the cluster is not ok"
    return problem


async def launch(
    config: LaunchConfig,
    console: Console,
    environ: Mapping[str, str],
    *,
    stop: asyncio.Event | None = None,
    force: asyncio.Event | None = None,
) -> int:
    """Keys, Valkey, the services; stop on SIGINT/SIGTERM/SIGHUP or ``stop``."""
    stop = stop if stop is not None else asyncio.Event()
    force = force if force is not None else asyncio.Event()
    signals = _install_signal_handlers(stop, force, console)
    valkey: EmbeddedValkey | EmbeddedValkeyCluster | None = None
    try:
        console.info(f"starting Missive (data in {config.data_dir}; Ctrl-C stops everything)")
        try:
            await asyncio.to_thread(ensure_keys, config.keys_dir)
        except OSError as exc:
            console.error(f"cannot create the signing keys in {config.keys_dir} (KEYS_DIR): {exc}")
            return 2
        redis_url = config.redis_url
        if config.embedded_valkey and config.cluster:
            cluster = EmbeddedValkeyCluster(
                config.valkey_dir, CLUSTER_MASTERS, ports=config.valkey_ports
            )
            valkey = cluster
            try:
                await asyncio.to_thread(cluster.start)
            except (ValkeyBinaryNotFound, ValkeyStartError) as exc:
                console.error(
                    "cannot start the Valkey Cluster (set REDIS_CLUSTER_NODES to use another "
                    f"cluster): {exc}"
                )
                return 2
            pids = ", ".join(str(node.pid) for node in cluster.nodes)
            console.info(
                f"valkey cluster ready at {cluster.url} (pids {pids}, data in {config.valkey_dir})"
            )
            redis_url = cluster.url
        elif config.embedded_valkey:
            valkey = EmbeddedValkey(config.valkey_dir, config.valkey_port)
            try:
                await asyncio.to_thread(valkey.start)
            except (ValkeyBinaryNotFound, ValkeyStartError) as exc:
                console.error(f"cannot start Valkey (set REDIS_URL to use another Redis): {exc}")
                return 2
            console.info(
                f"valkey ready at {valkey.url} (pid {valkey.pid}, AOF in {valkey.data_dir})"
            )
            redis_url = valkey.url
        else:
            problem = await asyncio.to_thread(_redis_problem, redis_url)
            if problem:
                console.error(
                    f"warning: Redis at {redact_url(redis_url)} does not answer ({problem}); "
                    "the services report NOT_SERVING until it does"
                )
        if stop.is_set():
            return 0
        return await _run_services(config, console, environ, redis_url, valkey, stop, force)
    finally:
        if valkey is not None:
            await asyncio.to_thread(valkey.stop)
            console.info("valkey cluster stopped" if config.cluster else "valkey stopped")
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _run_services(
    config: LaunchConfig,
    console: Console,
    environ: Mapping[str, str],
    redis_url: str,
    valkey: EmbeddedValkey | EmbeddedValkeyCluster | None,
    stop: asyncio.Event,
    force: asyncio.Event,
) -> int:
    supervisor = Supervisor(
        console,
        config.services,
        config.child_env(environ, redis_url),
        env_of=config.process_env,
    )
    tasks: list[asyncio.Task[Any]] = []
    try:
        try:
            await supervisor.start()
        except OSError as exc:
            console.error(f"cannot start the services: {exc}")
            return 1
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(_first_failure(supervisor, valkey))
        healthy = asyncio.create_task(
            wait_healthy(console, config.services, config.connect_host, config.health_timeout)
        )
        tasks += [stopped, failed, healthy]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not stopped.done() and not failed.done():
            not_serving = healthy.result()
            if not_serving:
                hint = "" if valkey else f"; is Redis at {redact_url(redis_url)} reachable?"
                console.error(
                    f"timed out after {config.health_timeout:g}s: {', '.join(not_serving)} "
                    f"did not report SERVING (see their output above{hint})"
                )
                return 1
            console.block(render_endpoints(config, redis_url, environ))
            await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        if stopped.done():
            return 0
        console.error(failed.result())
        return 1
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await supervisor.stop(config.stop_timeout, force)


async def _first_failure(
    supervisor: Supervisor, valkey: EmbeddedValkey | EmbeddedValkeyCluster | None
) -> str:
    """Why the system cannot go on: the first service (or Valkey node) to exit by itself."""
    watchers = [asyncio.create_task(_service_exit(supervisor))]
    nodes = valkey.nodes if isinstance(valkey, EmbeddedValkeyCluster) else [valkey]
    watchers += [asyncio.create_task(_valkey_exit(node)) for node in nodes if node is not None]
    try:
        done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        for watcher in watchers:
            watcher.cancel()
        for watcher in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _service_exit(supervisor: Supervisor) -> str:
    child = await supervisor.first_exit()
    code = child.process.returncode
    assert code is not None
    return f"{child.name} {describe_exit(code)} unexpectedly; stopping everything"


async def _valkey_exit(valkey: EmbeddedValkey) -> str:
    # EmbeddedValkey has no async wait; a slow poll of a local process is cheap.
    while valkey.running:  # noqa: ASYNC110
        await asyncio.sleep(_VALKEY_POLL_SECONDS)
    code = valkey.wait()
    return (
        f"valkey-server {describe_exit(code)} unexpectedly (log: {valkey.log_path}); "
        "stopping everything"
    )
