"""Publish an order to JetStream and report whether it is stored. Never reports "stored" without a
PubAck: the 200 of POST /orders hangs on `Published.stored` alone.

This is the ingest's hot path: publishes go through orderflow.natsmux.Requester (one reply
subscription, one timeout sweeper) and the PubAck is recognised by its bytes, not parsed into a
dataclass. Measured in bench/ingest.
"""

from __future__ import annotations

import enum
import logging
import time

from nats.aio.client import Client

from orderflow import contract
from orderflow.config import Settings
from orderflow.metrics import IngestMetrics
from orderflow.natsmux import JetStreamError, NoResponders, Requester, RequestTimeout, read_puback

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


class Publisher:
    def __init__(self, nc: Client, requests: Requester, settings: Settings, metrics: IngestMetrics) -> None:
        self._nc = nc
        self._requests = requests
        self._timeout_s = settings.publish_timeout_s
        self._max_inflight = settings.max_inflight_publishes
        self._counters = {r: metrics.orders_published.labels(r.value) for r in Published}
        self._observe = metrics.publish_duration.observe
        # Read at scrape time, no lock taken per publish; a multi-process pod keeps it in the shared
        # files instead (a callback cannot be summed across processes).
        self._inflight_gauge = metrics.publish_inflight if metrics.multiprocess else None
        if self._inflight_gauge is None:
            metrics.publish_inflight.set_function(lambda: requests.in_flight)

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
        if self._requests.in_flight >= self._max_inflight:
            return Published.OVERLOADED
        order_id = order.order_id
        # The queued status goes alongside the publish, fire-and-forget, as a KV *create*
        # (expected last subject sequence 0): it can never overwrite a worker's later status.
        await nc.publish(
            contract.STATUS_SUBJECT_PREFIX + order_id,
            contract.encode(
                contract.StatusRecord(order_id, "queued", 0, order.created_at, task_type=task_type)
            ),
            headers={contract.H_EXPECTED_LAST_SUBJECT_SEQ: "0"},
        )
        start = time.monotonic()
        gauge = self._inflight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            # JetStream's PubAck is the reply to a plain publish on a stream subject;
            # Nats-Msg-Id makes a retried order a duplicate inside the duplicate window.
            reply = await self._requests.request(
                contract.order_subject(task_type, order_id),
                contract.encode(order),
                {contract.H_MSG_ID: order_id},
                self._timeout_s,
            )
        except RequestTimeout:
            return Published.TIMEOUT
        except Exception as exc:  # connection closed or reconnecting under us
            log.debug("publish of %s failed: %r", order_id, exc)
            return Published.UNAVAILABLE
        finally:
            if gauge is not None:
                gauge.dec()
        try:
            duplicate = read_puback(reply)
        except NoResponders:
            return Published.UNAVAILABLE  # JetStream not there for this subject
        except JetStreamError as exc:
            log.warning("JetStream refused order %s: %s", order_id, exc)
            return Published.REJECTED
        self._observe(time.monotonic() - start)
        return Published.DUPLICATE if duplicate else Published.STORED
