"""Publish an order to JetStream and report whether it is stored. Never reports "stored" without a
PubAck: the 200 of POST /orders hangs on `Published.stored` alone.

This is the ingest's hot path, so it skips nats-py's `js.publish()` (a `wait_for` timer, a done
callback, a JSON parse and a dataclass per call): one reply subscription serves every publish,
one sweeper task times them all out, and the PubAck is recognised by its bytes. Measured in
bench/ingest.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from orderflow import contract
from orderflow.config import Settings
from orderflow.metrics import IngestMetrics

log = logging.getLogger(__name__)


class Published(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same Nats-Msg-Id inside the duplicate window: already stored
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    OVERLOADED = "overloaded"

    @property
    def stored(self) -> bool:
        return self in (Published.STORED, Published.DUPLICATE)


class _Timeout(Exception):
    pass


class Publisher:
    def __init__(self, nc: Client, settings: Settings, metrics: IngestMetrics) -> None:
        self._nc = nc
        self._timeout_s = settings.publish_timeout_s
        self._max_inflight = settings.max_inflight_publishes
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        # (deadline, token) in publish order: with one timeout for all, deadlines only grow.
        self._deadlines: collections.deque[tuple[float, str]] = collections.deque()
        self._next_token = 0
        self._prefix = ""
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._counters = {r: metrics.orders_published.labels(r.value) for r in Published}
        self._observe = metrics.publish_duration.observe
        # Read at scrape time: no lock taken per publish.
        metrics.publish_inflight.set_function(lambda: len(self._pending))

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._sweeper = asyncio.create_task(self._sweep(), name="publish-timeouts")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def _sweep(self) -> None:
        """Fail publishes whose PubAck did not come within publish_timeout_s."""
        interval = min(0.05, self._timeout_s / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, token = self._deadlines.popleft()
                future = self._pending.pop(token, None)
                if future is not None and not future.done():
                    future.set_exception(_Timeout())

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def publish(self, order: contract.Order, task_type: str) -> Published:
        result = await self._publish(order, task_type)
        self._counters[result].inc()
        return result

    async def _publish(self, order: contract.Order, task_type: str) -> Published:
        nc = self._nc
        # While disconnected nats-py would buffer the publish and we would only learn of it at the
        # timeout; answer 503 at once instead.
        if not nc.is_connected:
            return Published.UNAVAILABLE
        if len(self._pending) >= self._max_inflight:
            return Published.OVERLOADED
        order_id = order.order_id
        # The queued status goes alongside the publish, fire-and-forget, as a KV *create*
        # (expected last subject sequence 0): it can never overwrite a worker's later status.
        await nc.publish(
            contract.STATUS_SUBJECT_PREFIX + order_id,
            contract.encode(contract.StatusRecord(order_id, "queued", 0, order.created_at, task_type=task_type)),
            headers={contract.H_EXPECTED_LAST_SUBJECT_SEQ: "0"},
        )
        token = str(self._next_token)
        self._next_token += 1
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        start = time.monotonic()
        self._deadlines.append((start + self._timeout_s, token))
        try:
            # JetStream's PubAck is the reply to a plain publish on a stream subject;
            # Nats-Msg-Id makes a retried order a duplicate inside the duplicate window.
            await nc.publish(
                contract.order_subject(task_type),
                contract.encode(order),
                reply=self._prefix + token,
                headers={contract.H_MSG_ID: order_id},
            )
            reply = await future
        except _Timeout:
            return Published.TIMEOUT
        except Exception as exc:  # connection closed or reconnecting under us
            self._pending.pop(token, None)
            log.debug("publish of %s failed: %r", order_id, exc)
            return Published.UNAVAILABLE
        data = reply.data
        if not data:
            # A status-only reply: 503 No Responders (JetStream not there for this subject).
            return Published.UNAVAILABLE
        if b'"error"' in data:
            log.warning("JetStream refused order %s: %s", order_id, data[:200].decode(errors="replace"))
            return Published.REJECTED
        self._observe(time.monotonic() - start)
        if b'"duplicate"' in data and msgspec.json.decode(data).get("duplicate") is True:
            return Published.DUPLICATE
        return Published.STORED
