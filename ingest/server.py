"""The ingest's one lifecycle, top to bottom (README, How it works: Ingest): connect, bind, serve; on SIGTERM readiness
503 and the shutdown delay, stop accepting, finish requests, drain NATS, exit."""

from __future__ import annotations

import asyncio
import logging
import sys

from prometheus_client import CollectorRegistry

from ingest.app import create_app
from ingest.edge import edge
from ingest.state import IngestState
from orderflow import httpserver, natsauth
from orderflow.config import Settings
from orderflow.lifecycle import Lifecycle, wait_any
from orderflow.metrics import IngestMetrics
from orderflow.probeserver import ProbeServer

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> int:
    metrics = IngestMetrics(CollectorRegistry(), settings.prometheus_multiproc_dir)
    state = IngestState(settings, metrics)
    server = httpserver.make_server(
        create_app(state), settings.log_level, settings.shutdown_timeout_s, edge(settings, metrics)
    )
    lifecycle = Lifecycle()
    lifecycle.install()

    # 1. Connect once (queued mode). Until connected /readyz answers 503; a process behind a
    # shared port (bind_when_ready) does not even listen before, so SO_REUSEPORT never hands it a
    # connection it would answer 503.
    # A refusal (wrong CA, unknown or revoked user) is final: stop at once and exit 2 with it.
    connecting: asyncio.Task[None] | None = None
    if settings.mode == "queued":
        connecting = asyncio.create_task(state.connect(lifecycle.stop), name="nats-connect")
        connecting.add_done_callback(lambda t: _stop_if_refused(t, lifecycle))
        if settings.bind_when_ready:
            await wait_any(asyncio.shield(connecting), lifecycle.stop.wait())
            if _refused(connecting) is not None:  # (a refusal sets the stop event too)
                return _exit_refused(connecting)
            if not connecting.done() or lifecycle.stop.is_set():
                connecting.cancel()
                return 0
    else:
        log.info("direct mode: work inline, capacity %g RPS", settings.rate_limit_rps)

    # 2. Bind and serve until the first signal: the API, and /metrics on its own port.
    metrics_server: ProbeServer | None = None
    try:
        if settings.metrics_port:
            metrics_server = ProbeServer(
                settings.http_host,
                settings.metrics_port,
                state,
                ("/metrics",),
                # as the API port: a pod's processes share it, and a replacement binds it while
                # the old process serves out its shutdown delay
                reuse_port=True,
            ).start()
        await server.start(httpserver.bind(settings.http_host, settings.http_port))
    except OSError as exc:
        log.error("cannot listen on %s: %s", settings.http_host, exc)
        if metrics_server is not None:
            await metrics_server.stop()
        if connecting is not None:
            connecting.cancel()
        await state.close()
        return 1
    log.info(
        "ingest (%s mode) listening on %s:%d, /metrics on :%d",
        settings.mode,
        settings.http_host,
        settings.http_port,
        settings.metrics_port,
    )
    keyfile = state.access.keyfile
    watching: asyncio.Task[None] | None = None
    if keyfile is None:
        log.warning(
            "AUTH IS OFF: no ORDERFLOW_API_KEYS_FILE, so anyone who reaches %s:%d may post and read "
            "every order%s",
            settings.http_host,
            settings.http_port,
            "" if settings.auth_open else " (loopback only)",
        )
    else:
        log.info(
            "API keys from %s: %d keys (%s)", keyfile.path, len(keyfile.keys), ", ".join(keyfile.keys.names)
        )
        watching = asyncio.create_task(keyfile.watch(), name="api-keys")
    await lifecycle.stop.wait()
    if connecting is not None and _refused(connecting) is not None:
        await server.stop(lifecycle.force)
        if watching is not None:
            watching.cancel()
        if metrics_server is not None:
            await metrics_server.stop()
        return _exit_refused(connecting)

    # 3. Readiness 503 at once; keep serving while the endpoints controllers and kube-proxy take
    # this pod out of rotation (requests still arrive for a few seconds after SIGTERM).
    state.begin_shutdown()
    # Clients waiting on orders get their answer now (a ?wait what it knows, a stream its end),
    # not a reset when the server stops.
    await state.watch.close()
    # Never connected (queued mode): never ready, so in no Service's endpoints: nothing to wait for.
    delay_s = 0.0 if connecting is not None and state.nc is None else settings.shutdown_delay_s
    log.info("shutting down: readiness 503, serving %.1fs more", delay_s)
    await wait_any(lifecycle.force.wait(), timeout_s=delay_s)

    # 4. Stop accepting; finish in-flight requests within shutdown_timeout_s (a second signal
    # cuts this short).
    await server.stop(lifecycle.force)

    # 5. Drain the NATS connection (nats_drain_timeout_s): what is buffered is flushed.
    if connecting is not None and not connecting.done():
        connecting.cancel()
    await state.close()
    if watching is not None:
        watching.cancel()
    if metrics_server is not None:
        await metrics_server.stop()
    log.info("ingest stopped")
    return 0


def _refused(connecting: asyncio.Task[None]) -> natsauth.NatsAccessError | None:
    if not connecting.done() or connecting.cancelled():
        return None
    exc = connecting.exception()
    return exc if isinstance(exc, natsauth.NatsAccessError) else None


def _stop_if_refused(connecting: asyncio.Task[None], lifecycle: Lifecycle) -> None:
    if _refused(connecting) is not None:
        lifecycle.stop.set()


def _exit_refused(connecting: asyncio.Task[None]) -> int:
    log.error("%s", _refused(connecting))
    print(f"ingest: {_refused(connecting)}", file=sys.stderr)
    return 2
