"""Signals -> events, and small helpers for ordered, deadline-bound shutdown phases.

Signal handlers only set events (uvicorn's handle_exit, dramatiq's CLI): the first SIGTERM/SIGINT
starts a graceful stop, a second one forces it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Lifecycle:
    """`stop` is set by the first signal (graceful), `force` by the second (hand everything back now)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        loop = loop or asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.handle, sig)

    def handle(self, sig: int) -> None:
        if not self.stop.is_set():
            log.info("received %s: graceful stop", signal.Signals(sig).name)
            self.stop.set()
        else:
            log.warning("received %s again: forcing stop", signal.Signals(sig).name)
            self.force.set()


async def wait_any(*aws: Awaitable[Any], timeout_s: float | None = None) -> bool:
    """Wait until any awaitable finishes or the timeout passes. True if something finished."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
    )
    # nats-py logs every reconnect attempt at ERROR with a traceback; one line is enough.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
