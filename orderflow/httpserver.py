"""uvicorn run from our own event loop, with our own signal handling (lifecycle.py decides when to
stop, uvicorn only serves). SO_REUSEPORT lets several ingest processes share one port.

`Server.start()` binds and `Server.stop()` runs uvicorn's own shutdown (stop accepting, close idle
connections, wait for in-flight requests up to the graceful timeout), so that a service's lifecycle
can call each phase in its own order. No ASGI lifespan: services set up before they serve.

The edge (`Edge`, for the ingest) adds what uvicorn lacks (uvicorn issue #157):
- a receipt deadline: the request head within `header_timeout_s` (from the connection's first
  moment for its first request, from the first byte for a later one on a keep-alive connection),
  then the body within `body_timeout_s`. uvicorn's `timeout_keep_alive` covers only the idle time
  between requests and is reset by every byte, so one client dribbling bytes could hold a file
  descriptor and a buffer forever. Past the deadline: 408 where no response has begun (and the
  client has sent something), then close; counted by phase.
- a cap on open connections per process: a connection past it is answered at once with the
  service's refusal (the ingest's 503 + Retry-After), half-closed and dropped after a short
  linger, never parsed. Not uvicorn's `limit_concurrency`: that one counts in-flight requests too
  (a slow NATS would turn queued publishes into refusals), answers a plain-text 503 without
  Retry-After, logs a WARNING per refused request, and keeps the refused connection open.
Keep-alive reuse and responses are untouched: the deadline runs only while a request is being
received, and the idle time between requests stays uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How long a refused connection may linger, half-closed, for its client to read the refusal
# (closing at once with unread request bytes would make the kernel send a RST instead).
REFUSAL_LINGER_S = 1.0
_TIMEOUT_BODY = b'{"result":"request-timeout"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def refusal(status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A complete `connection: close` HTTP/1.1 response, for `Edge.refusal`."""
    from http import HTTPStatus

    head = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode())]
    head += [b"%s: %s" % kv for kv in ((b"content-type", b"application/json"), *headers)]
    head += [b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class EdgeEvents(Protocol):
    """What the edge reports (metrics, the summary log); called on the event loop, must be cheap."""

    def receipt_timeout(self, phase: str) -> None: ...

    def connection_refused(self) -> None: ...


@dataclass(frozen=True)
class Edge:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    refusal: bytes  # the whole response a connection past the cap gets
    events: EdgeEvents


class _Stage(enum.Enum):
    IDLE = 0  # no request begun (a fresh connection, or between keep-alive requests)
    HEAD = 1  # request line / headers arriving
    BODY = 2  # headers complete, body arriving
    DONE = 3  # request received; the app answers


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a receipt deadline and a connection cap (see the module
    docstring). Timers are armed only when a phase is left incomplete by a read, so a request that
    arrives in one segment (the common case) costs no timer beyond the connection's first."""

    edge: ClassVar[Edge]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stage = _Stage.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase: _Stage | None = None
        self._refused = False

    # --- connection ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.edge.max_connections:
            self._refuse(transport)
            return
        super().connection_made(transport)
        self._arm(_Stage.HEAD, self.edge.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._refused:
            return
        super().connection_lost(exc)

    def _refuse(self, transport: asyncio.Transport) -> None:
        self._refused = True
        self.transport = transport
        transport.write(self.edge.refusal)
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = self.loop.call_later(REFUSAL_LINGER_S, transport.close)
        self.edge.events.connection_refused()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped while the refusal lingers
        super().data_received(data)  # uvicorn cancels its keep-alive timer on every read
        stage = self._stage
        if stage is _Stage.HEAD:
            if self._deadline is None:  # a keep-alive connection's next request: from its first byte
                self._arm(_Stage.HEAD, self.edge.header_timeout_s)
        elif stage is _Stage.BODY:
            # A pipelined request waits with reading paused: its clock starts when it is served.
            if self._deadline_phase is not _Stage.BODY and not self.pipeline:
                self._arm(_Stage.BODY, self.edge.body_timeout_s)
        elif stage is _Stage.DONE:
            self._disarm()
        elif self._deadline is None and self.timeout_keep_alive_task is None:
            # Bytes between requests that begin none (the parser skips CRLFs): they cancelled the
            # keep-alive timer, so the next head's clock starts now and is not restarted by more.
            self._arm(_Stage.HEAD, self.edge.header_timeout_s)

    # --- parser callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._stage = _Stage.HEAD
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._stage = _Stage.BODY
        if self._deadline_phase is _Stage.HEAD:
            self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered before its body arrived (a 413): the connection now waits for a next
            # request, and the body's bytes cancelled the keep-alive timer that only a response arms.
            self._stage = _Stage.IDLE
            if self.timeout_keep_alive_task is None and not self.pipeline and not self.transport.is_closing():
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
        else:
            self._stage = _Stage.DONE
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._stage is _Stage.DONE and self.cycle.response_complete:  # the latest request answered
            self._stage = _Stage.IDLE
        elif self._stage is _Stage.BODY and self._deadline is None and not self.transport.is_closing():
            self._arm(_Stage.BODY, self.edge.body_timeout_s)  # a pipelined request now served

    # --- the deadline -----------------------------------------------------------------------
    def _arm(self, phase: _Stage, timeout_s: float) -> None:
        self._disarm()
        self._deadline_phase = phase
        self._deadline = self.loop.call_later(timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            self._deadline_phase = None

    def _expired(self) -> None:
        phase = self._deadline_phase
        self._deadline = self._deadline_phase = None
        transport = self.transport
        if transport.is_closing():
            return
        self.edge.events.receipt_timeout("headers" if phase is _Stage.HEAD else "body")
        cycle = self.cycle
        if phase is _Stage.BODY and cycle is not None and not cycle.response_complete:
            # The app waits in receive(): it gets http.disconnect and answers nothing.
            answer = not cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        else:
            # A head begun (bytes received) and no earlier response still being written.
            answer = self._stage is _Stage.HEAD and (cycle is None or cycle.response_complete)
        if answer:
            transport.write(REQUEST_TIMEOUT)
        transport.close()


class Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # lifecycle.Lifecycle owns SIGTERM/SIGINT; uvicorn's handlers would race it.
        yield

    async def start(self, sock: socket.socket) -> None:
        """Listen on `sock` and serve (uvicorn's startup without its tick loop)."""
        if not self.config.loaded:
            self.config.load()
        self.lifespan = self.config.lifespan_class(self.config)
        await self.startup(sockets=[sock])

    async def stop(self, force: asyncio.Event) -> None:
        """Stop accepting, let in-flight requests finish within the graceful timeout; `force`
        (a second signal) cuts the wait short."""
        forcing = asyncio.create_task(force.wait())
        forcing.add_done_callback(lambda _: setattr(self, "force_exit", True))
        try:
            await self.shutdown()
        finally:
            forcing.cancel()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def edge_protocol(edge: Edge) -> type[EdgeProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to one edge's limits."""
    return type("BoundEdgeProtocol", (EdgeProtocol,), {"edge": edge})


def make_server(
    app: Any, log_level: str, graceful_timeout_s: float | None = None, edge: Edge | None = None
) -> Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,  # uvicorn's records go to the root handler: our format, controls escaped
        access_log=False,
        lifespan="off",
        loop="none",  # the caller's loop (uvloop when installed)
        http="auto" if edge is None else edge_protocol(edge),  # httptools
        timeout_graceful_shutdown=None if graceful_timeout_s is None else max(1, round(graceful_timeout_s)),
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address; saves a middleware per request
        date_header=False,
    )
    return Server(config)


def new_event_loop_policy() -> None:
    """uvloop when available: +25-50% for the ingest on the same core."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
