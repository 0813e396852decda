"""Entry point: `python -m services.web` serves the web inbox over HTTP on WEB_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
from collections.abc import Mapping

import uvicorn
from sse_starlette.sse import AppStatus

from services.common.logging import configure_logging
from services.common.ports import bind_socket, format_address
from services.common.runner import (
    UvicornServer,
    install_signal_handlers,
    remove_signal_handlers,
    run,
)
from services.web.app import create_asgi
from services.web.live import LiveStreams
from services.web.settings import PORT_ENV, SECRET_ENV, Settings

logger = logging.getLogger(__name__)

NAME = "web"
_SLACK_SECONDS = 1.5
_STREAM_END_POLLS = 50
"""Up to 1 s (50 x 20 ms) for the live streams to end before the server stops."""


async def main(environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None) -> None:
    """Serve the web inbox until SIGTERM/SIGINT or ``stop``; live streams end at once then."""
    settings = Settings.from_env(environ)
    common = settings.common
    configure_logging(common.log_level, common.log_format, NAME)
    if settings.secret_generated:
        logger.info(
            "%s is not set: forms are signed with a key made for this process "
            "(set it when several processes serve the same site)",
            SECRET_ENV,
        )
    sock = bind_socket(settings.host, settings.port, PORT_ENV)
    streams = LiveStreams()
    config = uvicorn.Config(
        create_asgi(settings, streams),
        log_config=None,
        access_log=True,
        lifespan="off",
        ws="none",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, math.ceil(common.shutdown_grace_seconds)),
    )
    server = UvicornServer(config)
    stop_event = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = install_signal_handlers(loop, stop_event, NAME)
    AppStatus.should_exit = False
    serving = asyncio.create_task(server.serve(sockets=[sock]), name=f"{NAME}-http")
    host, port = sock.getsockname()[:2]
    logger.info(
        "%s: web inbox on http://%s (user %s, message %s, notification %s, frontend %s)",
        NAME,
        format_address(host, port),
        settings.user_addr,
        settings.message_addr,
        settings.notification_addr,
        settings.frontend_addr,
    )
    stopper = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait({serving, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()  # a crash of the server is the process's failure
            raise RuntimeError(f"{NAME}: the HTTP server stopped unexpectedly")
        logger.info("%s: draining for up to %.1fs (%d live streams end now)",
                    NAME, common.shutdown_grace_seconds, streams.open)  # fmt: skip
        streams.close()  # ends every live stream cleanly; browsers reconnect elsewhere
        for _ in range(_STREAM_END_POLLS):
            if not streams.open:
                break
            await asyncio.sleep(0.02)
        AppStatus.should_exit = True  # any stream still open: sse-starlette ends it
        server.should_exit = True
        limit = common.shutdown_grace_seconds + _SLACK_SECONDS
        done, _ = await asyncio.wait({serving}, timeout=limit)
        if not done:
            server.force_exit = True
            await asyncio.wait({serving}, timeout=0.5)
    finally:
        stopper.cancel()
        if not serving.done():
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        sock.close()
        remove_signal_handlers(loop, installed)
    logger.info("%s: stopped", NAME)


if __name__ == "__main__":
    sys.exit(run(main, name=NAME))
