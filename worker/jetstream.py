"""The worker and JetStream apart from its jobs: waiting at start-up until JetStream answers, and
what it samples on an interval for its metrics (the store, ORDERS, each consumer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext

from orderflow import consumers, contract
from orderflow.capacity import Caps
from orderflow.config import Settings
from orderflow.lifecycle import wait_any
from orderflow.metrics import WorkerMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")


class Stopped(Exception):
    """SIGTERM arrived before the worker was ready."""


def unanswered(exc: Exception) -> bool:
    """A JetStream API request that went unanswered or found nobody to answer (no leader yet),
    or "JetStream system temporarily unavailable" (10008): worth asking again."""
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError | nats.errors.NoRespondersError):
        return True
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    return isinstance(exc, consumers.JetStreamApiError) and "(code 10008)" in str(exc)


async def until_answered(what: str, call: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    """JetStream not answering yet is waited out, not a crash: a worker (re)started while a
    stream has no leader (4-9 s of a cluster's election) or while the cluster forms would
    otherwise exit 1 and go into the kubelet's crash-loop back-off. Config errors still raise."""
    delay_s = 0.5
    while True:
        try:
            return await call()
        except Exception as exc:
            if not unanswered(exc):
                raise
            log.warning("JetStream does not answer yet for %s (%r); retrying in %.1fs", what, exc, delay_s)
        if await wait_any(stop.wait(), timeout_s=delay_s):
            raise Stopped
        delay_s = min(2 * delay_s, 5.0)


async def sample_store(js: JetStreamContext, m: WorkerMetrics, caps: Caps, settings: Settings) -> None:
    """How full the store and ORDERS are, against their caps (orderflow/capacity.py)."""
    m.store_limit.set(max(0, caps.store_bytes))
    m.stream_limit.labels(contract.STREAM).set(max(0, caps.of(contract.STREAM)))
    orders = m.stream_bytes.labels(contract.STREAM)
    while True:
        with contextlib.suppress(Exception):
            account = await js.account_info()
            m.store_used.set(account.storage / max(1, settings.stream_replicas))
            orders.set((await js.stream_info(contract.STREAM)).state.bytes or 0)
        await asyncio.sleep(settings.consumer_info_interval_s)


async def sample_consumer(js: JetStreamContext, m: WorkerMetrics, consumer: str, interval_s: float) -> None:
    """The consumer's backlog, what it has out and whether it is paused."""
    pending = m.consumer_pending.labels(consumer)
    ack_pending = m.consumer_ack_pending.labels(consumer)
    paused = m.consumer_paused.labels(consumer)
    while True:
        with contextlib.suppress(Exception):
            info = await js.consumer_info(contract.STREAM, consumer)
            pending.set(info.num_pending or 0)
            ack_pending.set(info.num_ack_pending or 0)
            paused.set(1 if info.paused else 0)  # `orderflow pause` (nats-server 2.11+)
        await asyncio.sleep(interval_s)
