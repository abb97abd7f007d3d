"""Run the ingest: serve, and on SIGTERM follow SPEC §2's sequence."""

from __future__ import annotations

import asyncio
import logging

from ingest.app import create_app
from orderflow import httpserver
from orderflow.config import Settings
from orderflow.lifecycle import Lifecycle, wait_any

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> int:
    app = create_app(settings)
    state = app.state
    server = httpserver.make_server(app, settings.log_level, settings.shutdown_timeout_s)
    lifecycle = Lifecycle()
    lifecycle.install()
    if settings.bind_when_ready and settings.mode == "queued":
        # One of several processes on a shared port: do not take connections before NATS is there.
        connecting = asyncio.create_task(state.connect())
        await wait_any(asyncio.shield(connecting), lifecycle.stop.wait())
        if not connecting.done():
            connecting.cancel()
            return 0
    sock = httpserver.bind(settings.http_host, settings.http_port)
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    log.info("ingest (%s mode) listening on %s:%d", settings.mode, settings.http_host, settings.http_port)
    await wait_any(lifecycle.stop.wait(), asyncio.shield(serving))
    if serving.done():  # start-up failed (lifespan error, port taken)
        return 1 if not lifecycle.stop.is_set() else 0

    # Phase 1: readiness 503 at once; keep serving while the endpoints controllers and kube-proxy
    # take this pod out of rotation (requests still arrive for a few seconds after SIGTERM).
    state.shutting_down = True
    state.metrics.shutting_down.set(1)
    log.info("shutting down: readiness 503, serving %.1fs more", settings.shutdown_delay_s)
    await wait_any(lifecycle.force.wait(), timeout_s=settings.shutdown_delay_s)

    # Phase 2: stop accepting; uvicorn finishes in-flight requests within shutdown_timeout_s,
    # then the lifespan drains the NATS connection. A second signal cuts this short.
    server.should_exit = True
    force = asyncio.create_task(lifecycle.force.wait())
    force.add_done_callback(lambda _: setattr(server, "force_exit", True))
    await serving
    force.cancel()
    log.info("ingest stopped")
    return 0
