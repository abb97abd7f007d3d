"""Signals -> events, and small helpers for ordered, deadline-bound shutdown phases.

Signal handlers only set events (uvicorn's handle_exit, dramatiq's CLI): the first SIGTERM/SIGINT
starts a graceful stop, a second one forces it.

A supervisor (the multi-process ingest, `orderflow dev`) starts its Python children with the stop
signals held (`stop_signals_held`), so one forwarded while a child still imports is held pending
instead of killing it, until `Lifecycle.install` unblocks them with the handler in place; and, on
Linux, with `die_with_parent`: the kernel sends the child SIGTERM when its supervisor dies
(PR_SET_PDEATHSIG), so no child outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from orderflow import natsauth
from orderflow.logformat import JsonFormatter, SafeFormatter

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
        release_stop_signals()

    def handle(self, sig: int) -> None:
        if not self.stop.is_set():
            log.info("received %s: graceful stop", signal.Signals(sig).name)
            self.stop.set()
        else:
            log.warning("received %s again: forcing stop", signal.Signals(sig).name)
            self.force.set()


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def release_stop_signals() -> None:
    """Unblock SIGTERM/SIGINT once their handler is installed: a process started with them held
    (stop_signals_held) gets one that came while it was starting now, in that handler."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_held() -> Iterator[None]:
    """Block SIGTERM/SIGINT in this thread while it starts children: they inherit the mask through
    fork and exec and hold a stop signal pending until `Lifecycle.install` unblocks it. Here a
    signal that came meanwhile is delivered on the way out."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen (run in the child between fork and exec): the kernel
    sends the child SIGTERM when the thread that started it ends (Linux PR_SET_PDEATHSIG; None
    elsewhere), so start children from the main thread. Like every preexec_fn it needs a parent
    without other threads."""
    if sys.platform != "linux":
        return None
    parent = os.getpid()
    # Loaded here, in the parent: loading a library in a forked child is not safe.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the death signal was armed
            os._exit(1)

    return setup


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
                # A cancelled gather() ends later with CancelledError as its *exception*; unread, it
                # is logged as "exception was never retrieved", with a traceback, at shutdown.
                t.add_done_callback(_read_outcome)


def _read_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def setup_logging(level: str, form: str = "text") -> None:
    handler = logging.StreamHandler()
    # Control characters escaped: log lines carry handler errors and what clients sent.
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    # Credentials in a NATS URL never reach a log line, whoever logs it (nats-py's texts too).
    handler.addFilter(natsauth.RedactingFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("asyncio").addFilter(natsauth.not_tls_eof_noise)
    # nats-py logs every reconnect attempt at ERROR with a traceback; one line is enough.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
