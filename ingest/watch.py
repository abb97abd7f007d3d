"""One KV watch of ORDER_STATUS per ingest process, shared by every client waiting on an order
(GET /orders/{id}?wait= and /orders/{id}/events): a dispatcher from order id to its waiters.

The watch is a JetStream ordered consumer on `$KV.ORDER_STATUS.>` that delivers only what is
written from now on (deliver policy `new`): no history replayed at start, and nats-py re-creates it
from the next sequence after a gap or a missed heartbeat. Every status write of every order
arrives, so the callback does no more than slice the subject and look the id up; a record is
decoded only for an order someone waits on. A waiter registers *before* it reads the order's
current record, so a change between the read and the registration cannot be missed.

Bounded: at most `cap` waiters at once (ORDERFLOW_MAX_WAITERS); past it `register` raises Full and
the route answers 503 + Retry-After. On shutdown `close()` wakes every waiter with None: a ?wait
answers with what it knows, an event stream ends; both before uvicorn waits out its requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from prometheus_client import Gauge

from orderflow import contract
from orderflow.lookup import STATUS_STREAM, BadRecord, decode_record

log = logging.getLogger(__name__)

_PREFIX = contract.STATUS_SUBJECT_PREFIX
_SKIP = len(_PREFIX)
# A KV delete or purge (a status record's TTL): not a status change.
_REMOVED = frozenset({"DEL", "PURGE"})


class Full(Exception):
    """As many clients wait as the process allows."""


class Waiter:
    """One client waiting on one order: the records written for it since it registered, in order;
    None once the process shuts down."""

    __slots__ = ("order_id", "updates")

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self.updates: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()


class StatusWatch:
    def __init__(self, cap: int, gauge: Gauge | None = None) -> None:
        self.cap = cap
        self._gauge = gauge
        self.count = 0
        self.closed = False
        self._by_order: dict[str, list[Waiter]] = {}
        self._sub: Subscription | None = None

    @property
    def running(self) -> bool:
        return self._sub is not None and not self.closed

    async def start(self, js: JetStreamContext) -> None:
        self._sub = await js.subscribe(
            _PREFIX + ">",
            stream=STATUS_STREAM,
            cb=self._on_write,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            # every order's writes arrive here; a burst must not make this a slow consumer
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )

    @contextmanager
    def register(self, order_id: str) -> Iterator[Waiter]:
        """A waiter for `order_id` while the block runs. Raises Full past the cap."""
        if self.count >= self.cap:
            raise Full
        waiter = Waiter(order_id)
        self._by_order.setdefault(order_id, []).append(waiter)
        self.count += 1
        if self._gauge is not None:
            self._gauge.inc()
        if self.closed:
            waiter.updates.put_nowait(None)
        try:
            yield waiter
        finally:
            self.count -= 1
            if self._gauge is not None:
                self._gauge.dec()
            waiters = self._by_order[order_id]
            waiters.remove(waiter)
            if not waiters:
                del self._by_order[order_id]

    def deliver(self, order_id: str, data: bytes) -> None:
        """A record written for `order_id`: to each of its waiters."""
        waiters = self._by_order.get(order_id)
        if not waiters:
            return
        try:
            record = decode_record(data)
        except BadRecord as exc:
            log.warning("status record of %s unreadable (%s); not passed on", order_id, exc)
            return
        for waiter in waiters:
            waiter.updates.put_nowait(record)

    async def _on_write(self, msg: Msg) -> None:
        order_id = msg.subject[_SKIP:]
        if order_id not in self._by_order:
            return  # the common case: nobody waits on this order
        if msg.headers and msg.headers.get("KV-Operation") in _REMOVED:
            return
        self.deliver(order_id, msg.data)

    async def close(self) -> None:
        """Wake every waiter (None) and stop the watch."""
        self.closed = True
        for waiters in self._by_order.values():
            for waiter in waiters:
                waiter.updates.put_nowait(None)
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection is going anyway
                log.debug("status watch unsubscribe: %r", exc)
