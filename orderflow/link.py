"""The NATS connection's state beyond nats-py's flags, and the choice of server on reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Server

# A server is tried again no sooner than this after its last attempt (nats-py's
# reconnect_time_wait, applied per server by Link.pick).
RECONNECT_WAIT_S = 0.5


class Link:
    """The NATS connection as the services see it beyond nats-py's flags: `up` while connected,
    `down_since` during an outage, listeners told at once when the connection is lost (so a request
    waiting for a reply that can no longer come fails now, not at its timeout), and the choice of
    the next server when reconnecting.

    Failover (nats-py 2.16 facts): on a lost connection nats-py shuffles its pool (servers given plus
    those the cluster advertised in INFO `connect_urls`) and, by default, sleeps
    `reconnect_time_wait` before a server it tried "recently" — and may pick the dead server first,
    waiting a whole `connect_timeout` on a host that no longer answers. `pick` is its
    `reconnect_to_server_handler`: the server tried longest ago goes first (the one just lost goes
    last), any server not tried within RECONNECT_WAIT_S is tried at once, so a dead node costs
    no wait when other nodes are listed; one server alone is retried every RECONNECT_WAIT_S."""

    def __init__(
        self, reconnect_wait_s: float = RECONNECT_WAIT_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.up = asyncio.Event()
        self.down_since: float | None = None
        self._wait_s = reconnect_wait_s
        self._clock = clock
        self._listeners: list[Callable[[], None]] = []
        self._current: str | None = None
        self._tried: dict[str, float] = {}

    def on_lost(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def connected(self, netloc: str | None) -> None:
        self._current = netloc
        self.down_since = None
        self.up.set()

    def lost(self) -> None:
        now = self._clock()
        self.up.clear()
        if self.down_since is None:
            self.down_since = now
        if self._current is not None:
            # Last in line, but due at once if it is the only one (a blip, a quick restart).
            self._tried[self._current] = now - self._wait_s
        for listener in self._listeners:
            listener()

    def pick(self, servers: list[Server], info: dict[str, Any]) -> tuple[Server | None, float]:
        if not servers:
            return None, self._wait_s
        now = self._clock()
        best = min(servers, key=lambda s: self._tried.get(s.uri.netloc, float("-inf")))
        delay = max(0.0, self._tried.get(best.uri.netloc, float("-inf")) + self._wait_s - now)
        self._tried[best.uri.netloc] = now + delay
        return best, delay
