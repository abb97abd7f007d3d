"""The CLI's NATS connection: it fails fast, naming the server, instead of retrying forever.

nats-py: `max_reconnect_attempts=0` means "no limit" while it picks a server (_select_next_server
only drops a server after more than N attempts when N > 0), so 0 would retry an unreachable server
forever; 1 gives up after a second attempt with NoServersError. Each attempt waits at most
CONNECT_TIMEOUT_S (a port that accepts and never speaks NATS), and the whole at most CONNECT_BUDGET_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orderflow import natsauth
from orderflow.config import Settings

if TYPE_CHECKING:  # nats-py is imported where used: `orderflow --help` stays fast
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from orderflow.natsmux import Requester

CONNECT_ATTEMPTS = 1
CONNECT_TIMEOUT_S = 2.0
CONNECT_BUDGET_S = 8.0
REQUEST_TIMEOUT_S = 5.0


class Unreachable(Exception):
    """No NATS at the configured URL, or it went away; str() is the message to print."""


class Refused(Unreachable):
    """NATS answered and refused us (TLS, credentials): a configuration error, exit 2."""


def url_of(settings: Settings) -> str:
    """The servers for a message: credentials in a URL are never printed."""
    return natsauth.redact_urls(settings.nats_urls)


@dataclass
class Session:
    nc: Client
    js: JetStreamContext
    requests: Requester
    url: str


async def connect(settings: Settings, name: str = "orderflow-cli") -> Client:
    import nats.errors

    from orderflow import broker

    url = url_of(settings)
    logging.getLogger("asyncio").addFilter(natsauth.not_tls_eof_noise)
    try:
        return await asyncio.wait_for(
            broker.connect(
                settings, name, max_reconnect_attempts=CONNECT_ATTEMPTS, connect_timeout=CONNECT_TIMEOUT_S
            ),
            CONNECT_BUDGET_S,
        )
    except natsauth.NatsAccessError as exc:
        raise Refused(str(exc)) from None
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        reason = natsauth.redact(str(exc)) or type(exc).__name__
        raise Unreachable(f"cannot reach NATS at {url} ({reason})") from None


@contextlib.asynccontextmanager
async def session(settings: Settings, name: str = "orderflow-cli") -> AsyncIterator[Session]:
    """A connection, its JetStream context and a request mux; all closed on the way out."""
    from orderflow.natsmux import Requester

    nc = await connect(settings, name)
    requests = await Requester(nc, REQUEST_TIMEOUT_S).start()
    try:
        yield Session(nc, nc.jetstream(timeout=REQUEST_TIMEOUT_S), requests, url_of(settings))
    finally:
        await requests.stop()
        with contextlib.suppress(Exception):
            await nc.close()
