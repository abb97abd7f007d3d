"""Connecting to the broker, NATS: endless reconnects (a NATS restart never needs a service
restart), a server that refuses us (TLS, credentials) final at once, a password or token given only
over TLS, and a first connection that keeps trying until NATS is up or a stop is asked for.

The JetStream layout on it lives beside: streams.py (the streams, and ensure_layout at start-up),
buckets.py (the KV buckets), consumers.py (the durable pull consumers), drift.py (what the server
holds against what orderflow wants); where it cannot be brought to orderflow's, BrokerConfigError."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
from nats.aio.client import Client

from orderflow import natsauth
from orderflow.config import Settings
from orderflow.lifecycle import wait_any
from orderflow.link import RECONNECT_WAIT_S, Link
from orderflow.logsummary import SummaryLog

log = logging.getLogger(__name__)


class BrokerConfigError(Exception):
    """The server's existing stream/consumer cannot be brought to orderflow's config."""


class Stopped(Exception):
    """A stop was asked for before the first connection: nothing to serve, nothing to drain."""


async def connect(
    settings: Settings,
    name: str,
    link: Link | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_first_error: Callable[[Exception], None] | None = None,
    **extra: Any,
) -> Client:
    """Connect with endless reconnects: a NATS restart must never need a service restart. A server
    that refuses us (TLS, credentials) is final: NatsAccessError, at once, never a retry loop. With
    endless reconnects nats-py tries the *first* connection forever too, inside `nats.connect`,
    reporting each failure only to the error callback: `on_first_error` gets those."""
    link = link or Link()
    nc = Client()
    servers = natsauth.redact_urls(settings.nats_urls)
    last_refusal: list[str] = []
    denied: set[str] = set()

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected; reconnecting")
        link.lost()

    async def on_reconnected() -> None:
        url = nc.connected_url
        log.info("NATS reconnected to %s", natsauth.redact(url.netloc) if url else "?")
        link.connected(url.netloc if url else None)
        if on_reconnect is not None:
            await on_reconnect()

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            # A subject this identity may not use: the request times out, the reason only comes
            # here. Said once per subject (a few dozen at most), at error: the identity needs it.
            text = natsauth.redact(str(exc))
            if text not in denied and len(denied) < 64:
                denied.add(text)
                log.error("NATS refused it: %s (docs/kubernetes.md lists each identity's permissions)", text)
            return
        problem = natsauth.access_problem(exc)
        first = not nc.is_connected and nc.connected_url is None and not nc.is_reconnecting
        if problem is None:
            if first and on_first_error is not None:
                on_first_error(exc)
            else:
                log.debug("NATS error: %s", natsauth.redact(repr(exc)))
        elif first:
            # The first connect: nats-py would retry it forever; raising here ends its loop.
            raise natsauth.NatsAccessError(f"NATS at {servers} refused the connection: {problem}")
        elif last_refusal != [problem]:  # a reconnect refused: said once per reason, retried
            last_refusal[:] = [problem]
            log.error("NATS at %s refused the reconnect: %s", servers, problem)

    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "reconnect_to_server_handler": link.pick,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "error_cb": on_error,
        **settings.nats_options(),
        **extra,
    }
    if "tls" in options:
        for key in ("password", "token"):
            if isinstance(options.get(key), str):
                options[key] = _only_over_tls(nc, options[key])
    try:
        await nc.connect(**options)
        if "tls" in options and not nc._server_info.get("tls_required"):
            raise natsauth.NatsAccessError(f"NATS at {servers} refused the connection: {_PlaintextServer()}")
    except natsauth.NatsAccessError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
        raise
    link.connected(nc.connected_url.netloc if nc.connected_url else None)
    return nc


class _PlaintextServer(nats.errors.Error):
    """A server that does not ask for TLS while orderflow has a CA or client certificate set."""

    def __str__(self) -> str:
        return natsauth.PLAINTEXT_SERVER


def _only_over_tls(nc: Client, secret: str) -> Callable[[], str]:
    """The password or token as nats-py's callback, given only on a TLS connection. nats-py
    upgrades to TLS only when the server's INFO asks for it, whatever the URL's scheme: a server
    without TLS (misconfigured, or a downgrade on the way) would get the secret in plaintext. A
    nats error, so a reconnect tries the next server and the first connect stops (access_problem)."""

    def give() -> str:
        if not nc._server_info.get("tls_required"):
            raise _PlaintextServer()
        return secret

    return give


async def connect_retrying(
    settings: Settings,
    name: str,
    stop: asyncio.Event | None = None,
    link: Link | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Keep trying the first connection (a pod may start before NATS does), saying so once per
    `refusal_log_interval_s` with the URL (redacted) and the reason; `stop` set meanwhile raises
    Stopped at once (nats-py's own first-connection loop never looks at a signal). A refusal (TLS,
    credentials: NatsAccessError) is raised at once."""
    stop = stop or asyncio.Event()
    urls = natsauth.redact_urls(settings.nats_urls)
    failures = SummaryLog(log, f"cannot reach NATS at {urls}", settings.refusal_log_interval_s)

    def failed(exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        failures.note(natsauth.redact(reason))

    delay = 0.2
    while True:
        attempt = asyncio.ensure_future(connect(settings, name, link, on_reconnect, failed))
        await wait_any(attempt, stop.wait())  # cancels the attempt if stop came first
        if not attempt.done() or attempt.cancelled():
            raise Stopped
        exc = attempt.exception()
        if exc is None:
            failures.flush()
            return attempt.result()
        if isinstance(exc, natsauth.NatsAccessError):
            raise exc
        # nats-py raises a few unrelated types for "not there yet" outside its own loop
        failed(exc)
        if await wait_any(stop.wait(), timeout_s=delay):
            raise Stopped
        delay = min(delay * 2, 5.0)
