"""Request/reply over NATS for the hot paths (the ingest's publishes, the worker's status reads and
writes, acks): one reply subscription for every request and one sweeper for their timeouts.

nats-py's `request()` pays per call for a random token (an os.urandom syscall), a NUID, a
`wait_for` timer and a done callback; profiled, that was a fifth of a busy worker's CPU. Here a
counter names the reply subject and a heap of deadlines times requests out.

JetStream facts used by the helpers below:
- A publish to a stream subject with a reply subject is answered with a PubAck (JSON), or
  `{"error": ...}`; with no stream on the subject the server answers a 503 status (no data).
- `$JS.API.DIRECT.GET.<stream>.<subject>` returns the last message on a subject (KV get) with
  its headers, or a 404 status; a deleted KV key is a message with `KV-Operation: DEL|PURGE`.
  A subject with wildcards goes in the body instead (`$JS.API.DIRECT.GET.<stream>` with
  `{"last_by_subj": "orders.*.<id>"}`): a published subject cannot carry wildcards.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


class RequestTimeout(Exception):
    pass


class ConnectionLost(Exception):
    """The connection went down while the request waited: its reply can no longer come (a reply
    is delivered on the connection that sent the request). Whether the request itself reached the
    server is unknown; a JetStream publish retried with the same Nats-Msg-Id is safe."""


class LeaderChanged(ConnectionLost):
    """A stream leader was elected while the write waited for its PubAck. A write sent to the old
    leader (killed, or cut off) is never answered; waiting out its timeout would spend the request's
    whole budget. Whether it was stored is unknown; retried with the same Nats-Msg-Id it is stored
    once."""


class JetStreamError(Exception):
    """The server refused (an `error` PubAck) or nothing serves the subject (503).

    `err_code` is JetStream's own error code (10077 a stream limit with discard=new, 10023
    insufficient resources, 10008 JetStream temporarily unavailable, ...), 0 for a no-responders
    status; `description` is the server's text."""

    def __init__(self, message: str, err_code: int = 0, description: str = "") -> None:
        super().__init__(message)
        self.err_code = err_code
        self.description = description


class NoResponders(JetStreamError):
    """A status-only 503 reply: no stream (or no stream leader, mid-election) serves the subject."""


# The first character of a JetStream write's reply token (other tokens are digits only).
_WRITE = "w"


class Requester:
    def __init__(self, nc: Client, default_timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._default_timeout_s = default_timeout_s
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._counter = itertools.count()
        self._prefix = ""
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> Requester:
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep(), name="request-timeouts")
        return self

    async def stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.wait([sweeper])  # its end, without taking a cancel of our own for it
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RequestTimeout())
        self._pending.clear()

    def connection_lost(self) -> None:
        """Fail every waiting request at once (broker.Link calls this when the connection drops)."""
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ConnectionLost())

    def leader_changed(self) -> int:
        """Fail every waiting JetStream write (`request(write=True)`) at once: a stream leader was
        just elected (a `$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED` advisory), so a write that went
        to the old one will never be answered. Reads are left alone (any replica answers a direct
        get). The number of writes failed."""
        cut = [token for token in self._pending if token[0] == _WRITE]
        for token in cut:
            future = self._pending.pop(token)
            if not future.done():
                future.set_exception(LeaderChanged())
        return len(cut)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= now:
                _, token = heapq.heappop(deadlines)
                future = self._pending.pop(token, None)
                if future is not None and not future.done():
                    future.set_exception(RequestTimeout())

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
        *,
        write: bool = False,
    ) -> Msg:
        """The reply to one request. `write`: a JetStream write, failed with LeaderChanged by
        `leader_changed()` (its token says so: no per-request bookkeeping on the hot path)."""
        token = f"{_WRITE}{next(self._counter)}" if write else str(next(self._counter))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        deadline = time.monotonic() + (timeout_s or self._default_timeout_s)
        heapq.heappush(self._deadlines, (deadline, token))
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            self._pending.pop(token, None)
            raise
        return await future

    # --- JetStream helpers ------------------------------------------------------------------
    async def js_publish(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """Publish and wait for the PubAck; returns its raw JSON. Raises JetStreamError."""
        reply = await self.request(subject, payload, headers, timeout_s, write=True)
        read_puback(reply)
        return bytes(reply.data)

    async def direct_get(self, stream: str, subject: str, timeout_s: float | None = None) -> bytes | None:
        """The last message on `subject` (a KV get), or None if there is none or it was deleted."""
        reply = await self.request(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", None, timeout_s)
        entry = read_direct_get(reply, subject)
        if entry is None or (entry.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return bytes(entry.data)

    async def direct_get_last(self, stream: str, subjects: str, timeout_s: float | None = None) -> Msg | None:
        """The last message of `stream` on `subjects` (wildcards allowed, e.g. `orders.*.<id>`),
        with its headers (Nats-Subject, Nats-Sequence, Nats-Time-Stamp), or None."""
        payload = b'{"last_by_subj":' + msgspec.json.encode(subjects) + b"}"
        reply = await self.request(f"$JS.API.DIRECT.GET.{stream}", payload, None, timeout_s)
        return read_direct_get(reply, subjects)


def read_direct_get(reply: Msg, subjects: str) -> Msg | None:
    """The one reader of a direct get's answer: the message, or None where there is none (404).
    Raises JetStreamError for any other status."""
    headers: dict[str, Any] = reply.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    if status is not None:
        raise JetStreamError(f"direct get {subjects}: status {status} {headers.get('Description', '')}")
    return reply


def read_puback(reply: Msg) -> bool:
    """The one reader of a PubAck: True if it is a duplicate (the same Nats-Msg-Id was stored
    inside the duplicate window), False if newly stored. Raises NoResponders for a status-only 503
    and JetStreamError for an `error` PubAck. The common answer is recognised by its bytes; JSON
    is parsed only for an error or a duplicate."""
    data = reply.data
    if not data:
        status = (reply.headers or {}).get("Status", "?")
        raise NoResponders(f"no JetStream stream answered (status {status})")
    if b'"error"' in data:
        error = _error_of(data)
        raise JetStreamError(data[:300].decode(errors="replace"), error[0], error[1])
    return b'"duplicate"' in data and msgspec.json.decode(data).get("duplicate") is True


def _error_of(data: bytes) -> tuple[int, str]:
    try:
        error = msgspec.json.decode(data).get("error") or {}
        return int(error.get("err_code") or 0), str(error.get("description") or "")
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return 0, data[:200].decode(errors="replace")
