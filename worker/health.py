"""Health that a blocked event loop cannot silence: a watchdog thread measures the loop's lag, and
the probe and metrics endpoints are served from a thread of their own.

A handler that blocks the loop (a sync call) stops every heartbeat: after ack_wait its job is
redelivered elsewhere while it still runs here. So the lag is exported
(`orderflow_event_loop_lag_seconds`), logged loudly once it passes a second, and `/healthz`
answers 503 once the loop has not run for `loop_block_limit_s` (ack_wait/4): the kubelet restarts
the container before ack_wait runs out (the chart derives the liveness probe's timing from
ack_wait). `/readyz` and `/metrics` answer from the same thread, so a probe never waits on the loop.
That thread bounds what a client can hold: a read timeout and a connection cap
(orderflow/probeserver.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

# The probe server lives in the core (the ingest serves its /metrics with it too).
from orderflow.probeserver import MAX_CONNECTIONS, READ_TIMEOUT_S, ProbeServer

__all__ = ["MAX_CONNECTIONS", "READ_TIMEOUT_S", "LoopWatch", "ProbeServer"]

log = logging.getLogger(__name__)

WARN_LAG_S = 1.0


class LoopWatch:
    """Every `interval_s` the thread asks the loop to note the time; the lag is how late it did."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_s: float = 0.1) -> None:
        self._loop = loop
        self._interval_s = interval_s
        self._alive_at = time.monotonic()  # the last time the loop ran our callback
        self._asked_at = self._alive_at
        self.lag_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-watch", daemon=True)
        self._warned = False

    def start(self) -> LoopWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def blocked_s(self) -> float:
        """How long the loop has not answered (0 while it keeps up)."""
        return max(0.0, time.monotonic() - self._alive_at - self._interval_s)

    def _mark(self) -> None:
        self._alive_at = time.monotonic()
        self.lag_s = self._alive_at - self._asked_at

    def _watch(self) -> None:
        while not self._stop.wait(self._interval_s):
            if self._alive_at >= self._asked_at:  # the last ask was answered: ask again
                self._asked_at = time.monotonic()
                try:
                    self._loop.call_soon_threadsafe(self._mark)
                except RuntimeError:  # the loop is closed
                    return
            else:
                self.lag_s = time.monotonic() - self._asked_at
            if self.lag_s > WARN_LAG_S and not self._warned:
                self._warned = True
                log.error(
                    "event loop blocked for %.1fs: a handler is making a blocking call; heartbeats stop "
                    "while it lasts (use await, or run the call in a thread)",
                    self.lag_s,
                )
            elif self.lag_s < WARN_LAG_S / 2 and self._warned:
                self._warned = False
                log.warning("event loop running again")
