"""The ingest's HTTP edge at the protocol: uvicorn's httptools protocol with what uvicorn lacks
(uvicorn issue #157), answered before a request reaches the app:
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
- bounded heads: a request line plus headers over `max_head_bytes` -> 431, more than `max_headers`
  headers -> 431, a URL over `max_url_bytes` -> 414; answered, half-closed, dropped after a short
  linger, never handed to the app, counted by reason. httptools buffers a header until it is
  complete (one 1 MB header is 1 MB per connection) and uvicorn has no bound, so the bytes are
  counted before they reach the parser, which is never fed more than the limit of one head.
Keep-alive reuse and responses are untouched: the deadline runs only while a request is being
received, and the idle time between requests stays uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How long a refused connection may linger, half-closed, for its client to read the refusal
# (closing at once with unread request bytes would make the kernel send a RST instead).
REFUSAL_LINGER_S = 1.0
# The parser is fed at most this much at a time, so that bytes past a head's limit never reach
# it (a head ending inside a slice leaves at most the rest of the slice uncounted).
_SLICE = 4096
_TIMEOUT_BODY = b'{"result":"request-timeout"}'
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


# Refused heads: the reason (orderflow_orders_refused_total) and the whole response.
HEAD_REFUSALS = {
    "head_too_large": (431, b'{"result":"request-header-fields-too-large"}'),
    "too_many_headers": (431, b'{"result":"request-header-fields-too-large"}'),
    "url_too_long": (414, b'{"result":"uri-too-long"}'),
}


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

    def head_refused(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Edge:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    refusal: bytes  # the whole response a connection past the cap gets
    events: EdgeEvents
    max_head_bytes: int = 16 * 1024  # request line + headers
    max_headers: int = 100
    max_url_bytes: int = 8 * 1024


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
        self._refused = False  # past the cap: never connected to uvicorn
        self._dropping = False  # answered a refusal: what still arrives is dropped
        self._head_bytes = 0  # of the head being received, counted before the parser sees them
        self._header_count = 0
        self._head_problem: str | None = None  # a HEAD_REFUSALS reason found by a parser callback

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
        # The parser is fed in slices of at most _SLICE bytes, and outside a body (a head, or the
        # bytes between requests, or a pipelined head while the last request is answered) never
        # more than the head limit: a head that has not ended by then is refused. The common case,
        # a whole request in one short read, is one slice.
        while data:
            if self._refused or self._dropping or self.transport.is_closing():
                return  # read and dropped while the refusal lingers
            if self._stage is _Stage.BODY:
                piece = data[:_SLICE]
            else:
                room = self.edge.max_head_bytes - self._head_bytes
                if room <= 0:
                    self._refuse_head("head_too_large")
                    return
                piece = data[: min(room, _SLICE)]
                self._head_bytes += len(piece)  # reset when the head ends
            data = data[len(piece) :]
            self._feed(piece)

    def _feed(self, data: bytes) -> None:
        super().data_received(data)  # uvicorn cancels its keep-alive timer on every read
        if self._head_problem is not None:
            self._refuse_head(self._head_problem)
            return
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

    def _refuse_head(self, reason: str) -> None:
        """Drop what else arrives; answer 431 or 414 now, or once the response to the request
        before it (pipelined) is written, then half-close and close after the linger (closing
        with unread bytes would send a RST instead)."""
        self._dropping = True
        self._disarm()
        self.edge.events.head_refused(reason)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._answer_refusal(reason)
        else:
            self._head_problem = reason  # on_response_complete answers it

    def _answer_refusal(self, reason: str) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        status, body = HEAD_REFUSALS[reason]
        transport.write(refusal(status, body))
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = self.loop.call_later(REFUSAL_LINGER_S, transport.close)

    # --- parser callbacks -------------------------------------------------------------------
    # Once a head is refused, the rest of the read still goes through the parser: nothing of it
    # reaches uvicorn (no request is started, nothing more is buffered).
    def on_message_begin(self) -> None:
        if self._head_problem is not None:
            return
        self._stage = _Stage.HEAD
        self._header_count = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._head_problem is not None:
            return
        if len(self.url) + len(url) > self.edge.max_url_bytes:
            self._head_problem = "url_too_long"
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_problem is not None:
            return
        self._header_count += 1
        if self._header_count > self.edge.max_headers:
            self._head_problem = "too_many_headers"
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_problem is not None:
            return
        self._stage = _Stage.BODY
        self._head_bytes = 0
        if self._deadline_phase is _Stage.HEAD:
            self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._head_problem is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._head_problem is not None:
            return
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
        if self._dropping and self._head_problem is not None:
            self._answer_refusal(self._head_problem)  # a refused head behind this response
            return
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
