"""The probe server: probe answers (orderflow/probes.py) on a port of their own, served from a
thread that a blocked event loop cannot silence, and that bounds what a client can hold (a read
timeout and a connection cap). The worker serves /healthz, /readyz and /metrics on it, the ingest
its /metrics (its API port serves none)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orderflow import probes

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

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], reuse_port: bool = False
    ) -> None:
        self.allow_reuse_port = reuse_port  # read when it binds (Python 3.11+)
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
    """Probe answers (orderflow/probes.py) on a port of their own, served from a thread, so a
    blocked event loop cannot silence them: the worker's /healthz, /readyz and /metrics, the
    ingest's /metrics. With `reuse_port` several processes share the port (SO_REUSEPORT), as the
    ingest's processes share their API port."""

    def __init__(
        self,
        host: str,
        port: int,
        state: probes.Probed,
        paths: Sequence[str] = probes.PATHS,
        reuse_port: bool = False,
    ) -> None:
        served = frozenset(paths)

        class Handler(BaseHTTPRequestHandler):
            timeout = READ_TIMEOUT_S  # StreamRequestHandler.setup() sets it on the socket

            def parse_request(self) -> bool:
                return super().parse_request() and server.answering(self.connection)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                found = probes.answer(state, path, self.headers.get("Accept", "")) if path in served else None
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
        self._server = server = server_class((host or "0.0.0.0", port), Handler, reuse_port)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="probes", daemon=True)

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
