"""Publish an order to JetStream and report whether it is stored. Never reports "stored" without a
PubAck: the 200 of POST /orders hangs on `Published.stored` alone."""

from __future__ import annotations

import asyncio
import enum
import logging
import time

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

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


class Publisher:
    def __init__(self, nc: Client, js: JetStreamContext, settings: Settings, metrics: IngestMetrics) -> None:
        self._nc = nc
        self._js = js
        self._timeout_s = settings.publish_timeout_s
        self._max_inflight = settings.max_inflight_publishes
        self._inflight = 0
        self._metrics = metrics
        self._counters = {r: metrics.orders_published.labels(r.value) for r in Published}
        self._observe = metrics.publish_duration.observe
        self._gauge = metrics.publish_inflight

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def publish(self, order: contract.Order, task_type: str) -> Published:
        result = await self._publish(order, task_type)
        self._counters[result].inc()
        return result

    async def _publish(self, order: contract.Order, task_type: str) -> Published:
        # While disconnected nats-py would buffer the publish and we would only learn of it at the
        # timeout; answer 503 at once instead.
        if not self._nc.is_connected:
            return Published.UNAVAILABLE
        if self._inflight >= self._max_inflight:
            return Published.OVERLOADED
        payload = contract.encode(order)
        # The queued status goes alongside the publish, fire-and-forget, as a KV *create*
        # (expected last subject sequence 0): it can never overwrite a worker's later status.
        await self._nc.publish(
            contract.STATUS_SUBJECT_PREFIX + order.order_id,
            contract.encode(
                contract.StatusRecord(order.order_id, "queued", 0, order.created_at, task_type=task_type)
            ),
            headers={contract.H_EXPECTED_LAST_SUBJECT_SEQ: "0"},
        )
        self._inflight += 1
        self._gauge.inc()
        start = time.perf_counter()
        try:
            ack = await self._js.publish(
                contract.order_subject(task_type),
                payload,
                timeout=self._timeout_s,
                headers={contract.H_MSG_ID: order.order_id},
            )
        except (asyncio.TimeoutError, nats.errors.TimeoutError):
            return Published.TIMEOUT
        except (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError):
            return Published.UNAVAILABLE
        except nats.js.errors.APIError as exc:
            log.warning("JetStream refused order %s: %s", order.order_id, exc)
            return Published.REJECTED
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError, OSError):
            return Published.UNAVAILABLE
        finally:
            self._inflight -= 1
            self._gauge.dec()
        self._observe(time.perf_counter() - start)
        return Published.DUPLICATE if ack.duplicate else Published.STORED
