"""Health that a blocked event loop cannot silence: a watchdog thread measures the loop's lag, and
the probe and metrics endpoints are served from a thread of their own.

A handler that blocks the loop (a sync call) stops every heartbeat: after ack_wait its job is
redelivered elsewhere while it still runs here. So the lag is exported
(`orderflow_event_loop_lag_seconds`), logged loudly once it passes a second, and `/healthz`
answers 503 once the loop has not run for `loop_block_limit_s` (ack_wait/4): the kubelet restarts
the container before ack_wait runs out (the chart derives the liveness probe's timing from
ack_wait). `/readyz` and `/metrics` answer from the same thread, so a probe never waits on the loop.
That thread bounds what a client can hold: a read timeout and a connection cap (see _Server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orderflow import probes

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


# The probe server's clients are the kubelet (a probe every few seconds, 1 s timeout) and
# Prometheus (a scrape every 15 s): a handful of connections, each sending its request at once.
# Anything else reaching the port (the NetworkPolicy narrows who can) must not be able to hold the
# threads: a connection that sends nothing for READ_TIMEOUT_S is closed (the socket timeout is per
# read), and past MAX_CONNECTIONS open ones the oldest still reading its request is cut off to make
# room. Cutting the oldest, rather than refusing the newest, is what keeps /healthz answerable
# while stalled connections pile up: refusing would let 32 idle sockets fail the liveness probe
# and restart a healthy worker.
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a burst of connects beyond it waits for
    # SYN retransmits (1 s, 3 s, ...), the probe among them.
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.max_connections = MAX_CONNECTIONS
        self._lock = threading.Lock()
        # Open connections, the oldest first; True while its request is still being read.
        self._conns: dict[socket.socket, bool] = {}
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._lock:
            if len(self._conns) >= self.max_connections:
                oldest = next((c for c, reading in self._conns.items() if reading), None)
                if oldest is None:  # every slot is writing an answer: refuse this one
                    self.close_request(request)
                    return
                del self._conns[oldest]
                # Wakes the handler thread's blocked read with an EOF; that thread closes the socket.
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
            self._conns[request] = True
        super().process_request(request, client_address)

    def answering(self, request: socket.socket) -> bool:
        """The request is in: from now on it is not cut off. False when it already was."""
        with self._lock:
            if request not in self._conns:
                return False
            self._conns[request] = False
            return True

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)


class _Server6(_Server):
    address_family = socket.AF_INET6


class ProbeServer:
    """/healthz, /readyz and /metrics (orderflow/probes.py, as the ingest answers them) on the
    worker's port, served from a thread."""

    def __init__(self, host: str, port: int, state: probes.Probed) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT_S  # StreamRequestHandler.setup() sets it on the socket

            def parse_request(self) -> bool:
                return super().parse_request() and server.answering(self.connection)

            def do_GET(self) -> None:
                found = probes.answer(state, self.path.split("?", 1)[0])
                status, headers, body = found if found is not None else (404, [], b'{"status":"not-found"}')
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name.decode(), value.decode())
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # probes every few seconds would flood the log

        server_class = _Server6 if ":" in host else _Server
        self._server = server = server_class((host or "0.0.0.0", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="probes", daemon=True)

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
