"""Publish an order to JetStream and report whether it is stored. Never reports "stored" without a
PubAck: the 200 of POST /orders hangs on `Published.stored` alone.

This is the ingest's hot path: publishes go through orderflow.natsmux.Requester (one reply
subscription, one timeout sweeper) and the PubAck is recognised by its bytes, not parsed into a
dataclass. Measured in bench/ingest.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from typing import TYPE_CHECKING, NamedTuple

from nats.aio.client import Client

from ingest import delay
from orderflow import contract
from orderflow.config import Settings
from orderflow.link import Link
from orderflow.logsummary import SummaryLog
from orderflow.metrics import IngestMetrics
from orderflow.natsmux import (
    JetStreamError,
    LeaderChanged,
    NoResponders,
    Requester,
    RequestTimeout,
    read_puback,
)

if TYPE_CHECKING:
    from orderflow.otel import Tracer

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


# Why a publish was refused (the `reason` of orderflow_orders_refused_total; docs/ingest.md).
REASONS = (
    "nats_down",
    "jetstream_unavailable",
    "publish_timeout",
    "stream_full",
    "storage_full",
    "rejected",
    "overloaded",
)
# JetStream error codes (nats-server's errors.json) a PubAck can carry.
_JS_CLUSTER_NOT_AVAILABLE = 10008  # JetStream system temporarily unavailable
_JS_INSUFFICIENT_RESOURCES = 10023
_JS_STORAGE_RESOURCES_EXCEEDED = 10047
_JS_STREAM_STORE_FAILED = 10077  # "maximum bytes/messages exceeded" with discard=new, or an I/O error
_JS_EXPECTED_LAST_SEQ_NOT_READY = 10163  # a new leader cannot check an expected sequence yet (503)


class Refusals:
    """Every 503 of POST /orders: counted by reason, logged as one summary line per interval."""

    def __init__(self, metrics: IngestMetrics, interval_s: float) -> None:
        self._counters = {r: metrics.orders_refused.labels(r) for r in REASONS}
        self._log = SummaryLog(log, "orders refused (503)", interval_s)

    def note(self, reason: str, detail: str) -> None:
        self._counters[reason].inc()
        self._log.note(f"{reason}: {detail}")


def _refusal_of(exc: JetStreamError) -> tuple[Published, str]:
    code = exc.err_code
    if code in (_JS_CLUSTER_NOT_AVAILABLE, _JS_EXPECTED_LAST_SEQ_NOT_READY):
        return Published.UNAVAILABLE, "jetstream_unavailable"
    if code in (_JS_INSUFFICIENT_RESOURCES, _JS_STORAGE_RESOURCES_EXCEEDED):
        return Published.REJECTED, "storage_full"
    if code == _JS_STREAM_STORE_FAILED and "maximum" in exc.description:
        return Published.REJECTED, "stream_full"
    return Published.REJECTED, "rejected"


# JetStream's atomic batch publish (ADR-50)
H_BATCH_ID = "Nats-Batch-Id"
H_BATCH_SEQ = "Nats-Batch-Sequence"
H_BATCH_COMMIT = "Nats-Batch-Commit"

# Between attempts while connected but no stream answers (a leader election takes a second or two).
RETRY_PAUSE_S = 0.05
MAX_RETRY_PAUSE_S = 0.4


class Sent(NamedTuple):
    result: Published
    refusal: tuple[str, str] | None  # (reason, detail) when not stored
    puback: bytes = b""  # the PubAck's JSON when stored
    err_code: int = 0  # JetStream's error code when it refused


def message_of(
    order: contract.Order | contract.TypedOrder,
    task_type: str,
    status_check: bool,
    client: str | None,
    run_at: float | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """An order's message: its subject, body and headers (Publisher.publish). A delayed order
    (`run_at`) is a scheduled message in ORDER_RETRIES, as worker/outcome.py's `_reschedule`
    stores a retry: nats-server copies it to orderflow.retry.<type>.<id> at its time, which ORDERS
    sources as orders.<type>.<id>. Its Nats-Msg-Id is still the order id (a retried POST is a
    duplicate in ORDER_RETRIES); the status check makes the worker read a cancel made meanwhile."""
    headers = {contract.H_MSG_ID: order.order_id}
    if status_check or run_at is not None:
        headers[contract.H_STATUS_CHECK] = "1"
    if client is not None:
        headers[contract.H_CLIENT] = client
    if run_at is not None:
        tail = f"{task_type}.{order.order_id}"
        headers[contract.H_SCHEDULE] = f"@at {delay.rfc3339(run_at)}"
        headers[contract.H_SCHEDULE_TARGET] = contract.RETRY_PREFIX + tail
        return contract.SCHEDULE_PREFIX + tail, contract.encode(order), headers
    return contract.order_subject(task_type, order.order_id), contract.encode(order), headers


class Publisher:
    def __init__(
        self,
        nc: Client,
        link: Link,
        requests: Requester,
        settings: Settings,
        metrics: IngestMetrics,
        refusals: Refusals,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer
        self._nc = nc
        self._link = link
        self._trouble_since: float | None = None  # the first failover-like failure since a success
        self._refusals = refusals
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

    async def publish(
        self,
        order: contract.Order | contract.TypedOrder,
        task_type: str,
        status_check: bool = False,
        client: str | None = None,
        run_at: float | None = None,
    ) -> Published:
        """Store the order on `orders.<type>.<id>` with Nats-Msg-Id = its id (a retried order is a
        duplicate inside the duplicate window). `status_check` marks it for the worker: a status
        record may exist for this id (a client's Idempotency-Key), read it before running.
        `client` is the API key's name, carried as a header into the order's status record."""
        # No `queued` status record: the order's own message says it is queued
        # (orderflow/lookup.py), so one stored write per order here, not two.
        subject, payload, headers = message_of(order, task_type, status_check, client, run_at)
        tracer = self._tracer
        if tracer is None or tracer.carry_dropped(headers):  # untraced, or its request was not sampled
            sent = await self.send(subject, payload, headers)
        else:  # the producer span, the PubAck wait inside it; its context rides in the headers
            with tracer.producer(contract.SUBJECT_PREFIX + task_type, order.order_id, headers) as span:
                sent = await self.send(subject, payload, headers)
                span.set_attribute("orderflow.published", sent.result.value)
                if not sent.result.stored:
                    tracer.failed(span, sent.result.value)
        self._counters[sent.result].inc()
        if sent.refusal is not None:
            self._refusals.note(*sent.refusal)
        return sent.result

    async def publish_atomic(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> Sent:
        """Store `messages` (subject, payload, headers) all or nothing (_atomic). Traced, one
        producer span for the batch, its context in every order's headers: each order joins the
        batch request's trace (docs/observability.md)."""
        tracer = self._tracer
        carried: dict[str, str] = {}
        if tracer is None or tracer.carry_dropped(carried):
            return await self._atomic(messages, carried)
        destination = messages[0][0].rsplit(".", 1)[0]  # orders.<type>.<id>: one type a batch
        with tracer.producer(destination, None, carried, len(messages)) as span:
            sent = await self._atomic(messages, carried)
            span.set_attribute("orderflow.published", sent.result.value)
            if not sent.result.stored:
                tracer.failed(span, sent.result.value)
        return sent

    async def _atomic(
        self, messages: list[tuple[str, bytes, dict[str, str]]], carried: dict[str, str]
    ) -> Sent:
        """JetStream's atomic batch (nats-server 2.12+, ADR-50, a stream with allow_atomic); every
        message gets the `carried` trace headers. The first is a request (the server
        acknowledges the batch's start with an empty reply), the middle ones plain publishes, the
        last carries Nats-Batch-Commit and is answered by the batch's one PubAck. Not retried: a
        batch that failed stored nothing; one whose answer timed out is the caller's to resolve."""
        if not self._nc.is_connected:
            return Sent(Published.UNAVAILABLE, ("nats_down", "not connected"))
        batch_id = os.urandom(12).hex()
        last = len(messages)
        deadline = time.monotonic() + self._timeout_s

        def headers_of(seq: int, headers: dict[str, str]) -> dict[str, str]:
            batch = {H_BATCH_ID: batch_id, H_BATCH_SEQ: str(seq)}
            return {**headers, **carried, **batch, **({H_BATCH_COMMIT: "1"} if seq == last else {})}

        if last > 1:
            # Awaited, so that it is on the wire before the rest (and the batch is known to have
            # started: one round trip per batch, not per order).
            subject, payload, headers = messages[0]
            first = await self._attempt(subject, payload, headers_of(1, headers), deadline, ack=False)
            if not first.result.stored:
                return self._noted(first, last)
            for seq, (subject, payload, headers) in enumerate(messages[1:-1], start=2):
                await self._nc.publish(subject, payload, headers=headers_of(seq, headers))
        subject, payload, headers = messages[-1]
        return self._noted(await self._attempt(subject, payload, headers_of(last, headers), deadline), last)

    def _noted(self, sent: Sent, orders: int) -> Sent:
        self._counters[sent.result].inc(orders)
        if sent.refusal is not None:
            self._refusals.note(*sent.refusal)
        return sent

    async def send(self, subject: str, payload: bytes, headers: dict[str, str]) -> Sent:
        """One JetStream write, answered by its PubAck within the publish budget.

        A write that fails because of a failover is tried again inside the same budget, with the
        same headers (so the same Nats-Msg-Id: JetStream stores it once, whichever attempt got
        through): the connection lost or reconnecting (wait until it is back), no stream answering
        (no responders: a stream leader being elected) or JetStream temporarily unavailable (a
        short, growing pause). Only while the trouble is younger than the budget: in a long outage
        every write fails at once (503), as it would without retries, instead of each request
        waiting out its budget. A timeout is not retried (it has used the budget), nor is a refusal
        (a full stream stays full)."""
        deadline = time.monotonic() + self._timeout_s
        pause_s = RETRY_PAUSE_S
        while True:
            sent = await self._attempt(subject, payload, headers, deadline)
            if sent.result is not Published.UNAVAILABLE:
                if sent.result.stored:
                    self._trouble_since = None
                return sent
            next_pause_s = await self.ride_out(deadline - time.monotonic(), pause_s)
            if next_pause_s is None:
                return sent
            pause_s = next_pause_s

    async def ride_out(self, remaining_s: float, pause_s: float) -> float | None:
        """Between the attempts of a write (`send`), or of a read that goes with one (the key
        store's reads before its publish): wait for a failover's trouble to pass, until the
        connection is back or for `pause_s` while it is up (a stream leader being elected). The
        pause for the next wait, or None: the time is up, or the trouble is older than the budget
        (a long outage fails at once)."""
        now = time.monotonic()
        started = self._link.down_since or self._trouble_since
        if started is None:
            started = self._trouble_since = now
        if remaining_s <= 0 or now - started >= self._timeout_s:
            return None
        if not self._nc.is_connected:
            try:
                await asyncio.wait_for(self._link.up.wait(), remaining_s)
            except TimeoutError:
                return None
            return pause_s
        await asyncio.sleep(min(pause_s, remaining_s))
        return min(2 * pause_s, MAX_RETRY_PAUSE_S)

    async def _attempt(
        self, subject: str, payload: bytes, headers: dict[str, str], deadline: float, ack: bool = True
    ) -> Sent:
        """One write; `ack=False`: its reply is empty when it went well (an atomic batch's start)."""
        nc = self._nc
        # While disconnected nats-py would buffer the publish and we would only learn of it at the
        # timeout; wait for the connection (send) or answer 503 instead.
        if not nc.is_connected:
            return Sent(Published.UNAVAILABLE, ("nats_down", "not connected"))
        in_flight = self._requests.in_flight
        if in_flight >= self._max_inflight:
            return Sent(Published.OVERLOADED, ("overloaded", f"{in_flight} publishes in flight"))
        start = time.monotonic()
        gauge = self._inflight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            # JetStream's PubAck is the reply to a plain publish on a stream subject.
            reply = await self._requests.request(
                subject, payload, headers, max(deadline - start, 0.001), write=True
            )
        except RequestTimeout:
            return Sent(Published.TIMEOUT, ("publish_timeout", f"no PubAck within {self._timeout_s:g}s"))
        except LeaderChanged:  # sent to a leader that is gone: send it to the new one
            return Sent(Published.UNAVAILABLE, ("jetstream_unavailable", "stream leader changed"))
        except Exception as exc:  # ConnectionLost: the connection went down under the request
            return Sent(Published.UNAVAILABLE, ("nats_down", repr(exc)))
        finally:
            if gauge is not None:
                gauge.dec()
        if not ack and not reply.data and not reply.headers:
            return Sent(Published.STORED, None)
        try:
            duplicate = read_puback(reply)
        except NoResponders:
            return Sent(Published.UNAVAILABLE, ("jetstream_unavailable", "no stream answered"))
        except JetStreamError as exc:
            result, reason = _refusal_of(exc)
            return Sent(result, (reason, exc.description or str(exc)), err_code=exc.err_code)
        self._observe(time.monotonic() - start)
        return Sent(Published.DUPLICATE if duplicate else Published.STORED, None, reply.data)
