"""Entry point: `python -m services.web` serves the web inbox over HTTP on WEB_PORT."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping

from sse_starlette.sse import AppStatus

from services.common.logging import configure_logging
from services.common.ports import bind_socket, format_address
from services.common.runner import run, serve_http, uvicorn_server
from services.web.app import create_asgi
from services.web.live import LiveStreams
from services.web.settings import PORT_ENV, SECRET_ENV, Settings

logger = logging.getLogger(__name__)

NAME = "web"


async def main(environ: Mapping[str, str] = os.environ, stop: asyncio.Event | None = None) -> None:
    """Serve the web inbox until SIGTERM/SIGINT or ``stop``; live streams end at once then."""
    settings = Settings.from_env(environ)
    grace = settings.common.shutdown_grace_seconds
    configure_logging(settings.common.log_level, settings.common.log_format, NAME)
    if settings.secret_generated:
        logger.info(
            "%s is not set: forms are signed with a key made for this process "
            "(set it when several processes serve the same site)",
            SECRET_ENV,
        )
    sock = bind_socket(settings.host, settings.port, PORT_ENV)
    streams = LiveStreams()
    app = create_asgi(settings, streams)
    server = uvicorn_server(app, grace, lifespan="off", proxy_headers=False)
    AppStatus.should_exit = False
    logger.info(
        "%s: web inbox on http://%s (user %s, message %s, notification %s, frontend %s)",
        NAME,
        format_address(*sock.getsockname()[:2]),
        settings.user_addr,
        settings.message_addr,
        settings.notification_addr,
        settings.frontend_addr,
    )

    async def end_streams() -> None:
        logger.info("%s: draining for up to %.1fs (%d live streams end now)",
                    NAME, grace, streams.open)  # fmt: skip
        await streams.end()  # browsers reconnect elsewhere

    await serve_http(NAME, server, sock, grace=grace, stop=stop, before_stop=end_streams)


if __name__ == "__main__":
    sys.exit(run(main, name=NAME))
