"""The one place that maps a job's result to ack / nak / term / dead letter, and its status.

JetStream facts this relies on:
- `nak(delay)` redelivers after `delay`; a bare nak redelivers at once (used only to hand back).
- `term` stops redelivery for good; in a work-queue stream it also removes the message.
- An acked message is never redelivered, so "done" is written (confirmed) *before* the ack: a crash
  between the two leaves a redelivery that dedupes on the done status instead of a lost status.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from dataclasses import dataclass

from nats.aio.msg import Msg

from orderflow import contract
from orderflow.config import Settings
from orderflow.metrics import WorkerMetrics
from orderflow.natsmux import Requester
from worker.status import StatusStore

log = logging.getLogger(__name__)


class Kind(enum.Enum):
    DONE = "done"
    RETRY = "retry"
    TIMEOUT = "timeout"
    POISON = "poison"
    DEAD = "dead"
    CANCELLED = "cancelled"
    HANDED_BACK = "handed_back"
    ALREADY_DONE = "already_done"
    ALREADY_CANCELLED = "already_cancelled"
    RUNNING_ELSEWHERE = "running_elsewhere"


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    error: str | None = None
    delay_s: float | None = None  # RUNNING_ELSEWHERE: when to look again


@dataclass
class Delivery:
    """What the settler needs to know about one delivery."""

    msg: Msg
    order_id: str
    task_type: str
    attempt: int
    started_at: float


def retry_delay_s(attempt: int, base_s: float, max_s: float, rand: float | None = None) -> float:
    """Exponential in the delivery count, with jitter in [50%, 100%]: attempt n+1 never waits less
    than attempt n, and a burst of failures does not come back as a burst."""
    r = random.random() if rand is None else rand
    exponential: float = base_s * 2.0 ** max(0, attempt - 1)
    return min(max_s, exponential) * (0.5 + 0.5 * r)


def _short(error: str | None) -> str | None:
    return None if error is None else error[:500]


def status_record(
    d: Delivery, status: str, worker_id: str, error: str | None = None
) -> contract.StatusRecord:
    """The KV ORDER_STATUS value for a delivery, as this worker sees it now."""
    now = time.time()
    return contract.StatusRecord(
        d.order_id,
        status,
        d.attempt,
        now,
        worker_id=worker_id,
        task_type=d.task_type,
        started_at=d.started_at,
        finished_at=now if status in contract.FINAL_STATUSES else None,
        error=_short(error),
    )


class Settler:
    def __init__(
        self, requests: Requester, status: StatusStore, settings: Settings, metrics: WorkerMetrics
    ) -> None:
        self._requests = requests
        self._status = status
        self._max_deliver = settings.max_deliver
        self._retry_base_s = settings.retry_base_s
        self._retry_max_s = settings.retry_max_s
        self._worker_id = settings.worker_id
        self._metrics = metrics

    def _record(self, d: Delivery, status: str, error: str | None = None) -> contract.StatusRecord:
        return status_record(d, status, self._worker_id, error)

    async def settle(self, d: Delivery, outcome: Outcome) -> Kind:
        """Acknowledge the delivery as the outcome says. Returns what was actually done."""
        kind = outcome.kind
        if kind in (Kind.RETRY, Kind.TIMEOUT) and d.attempt >= self._max_deliver:
            kind = Kind.DEAD
        if kind is Kind.DONE:
            await self._put_final(self._record(d, "done"))
            await self._ack(d)
        elif kind is Kind.ALREADY_DONE:
            await self._ack(d)
        elif kind is Kind.ALREADY_CANCELLED:
            await d.msg.term()
        elif kind in (Kind.RETRY, Kind.TIMEOUT):
            delay = retry_delay_s(d.attempt, self._retry_base_s, self._retry_max_s)
            # Confirmed before the nak: the next worker must not find this worker's lease.
            await self._put_final(self._record(d, "queued", outcome.error))
            await d.msg.nak(delay=delay)
            log.info(
                "order %s attempt %d failed (%s); retry in %.2fs", d.order_id, d.attempt, outcome.error, delay
            )
        elif kind is Kind.POISON:
            await self._put_final(self._record(d, "failed", outcome.error))
            await d.msg.term()
            log.warning("order %s is poison (%s); terminated", d.order_id, outcome.error)
        elif kind is Kind.DEAD:
            if not await self._dead_letter(d, outcome.error or "failed"):
                return Kind.RETRY
        elif kind is Kind.CANCELLED:
            await self._put_final(self._record(d, "cancelled", "cancelled on request"))
            await d.msg.term()
        elif kind is Kind.HANDED_BACK:
            await self._put_final(self._record(d, "queued", f"handed back by {self._worker_id}"))
            # Immediate redelivery: another worker picks it up now instead of after ack_wait.
            await d.msg.nak()
        elif kind is Kind.RUNNING_ELSEWHERE:
            # Leave the status (and the lease) to the worker running it; look again later.
            await d.msg.nak(delay=outcome.delay_s)
            log.warning("order %s delivered again while %s; deferred", d.order_id, outcome.error)
        return kind

    async def _put_final(self, record: contract.StatusRecord) -> None:
        """A final status (and the `queued` of a retry or hand-back) must be stored before the
        message is acked, termed or naked. Through a NATS restart
        keep trying: the job stays in its slot meanwhile, so heartbeats keep it from redelivery."""
        delay = 0.1
        for attempt in range(12):
            try:
                await self._status.put(record, confirm=True)
                return
            except Exception as exc:
                if attempt == 11:
                    raise
                log.info(
                    "order %s: status %s not stored yet (%r); retrying", record.order_id, record.status, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _ack(self, d: Delivery) -> None:
        try:
            await self._requests.ack_sync(d.msg)
        except Exception as exc:
            # The done status is already stored: if this ack is lost, the redelivery dedupes on it.
            log.info("order %s: ack not confirmed (%r); sending a plain ack", d.order_id, exc)
            await d.msg.ack()

    async def _dead_letter(self, d: Delivery, error: str) -> bool:
        headers = dict(d.msg.headers or {})
        headers.pop(contract.H_MSG_ID, None)  # the DLQ has its own duplicate window
        headers.update(
            {
                contract.H_ERROR: _short(error) or "",
                contract.H_ATTEMPTS: str(d.attempt),
                contract.H_ORDER_ID: d.order_id,
                contract.H_SUBJECT: d.msg.subject,
                contract.H_WORKER: self._worker_id,
            }
        )
        try:
            await self._requests.js_publish(contract.DLQ_PREFIX + d.task_type, d.msg.data, headers)
        except Exception as exc:
            # Never term what is not safely in the DLQ: try again later.
            delay = retry_delay_s(d.attempt, self._retry_base_s, self._retry_max_s)
            log.error("order %s: dead-letter publish failed (%s); nak %.1fs", d.order_id, exc, delay)
            await d.msg.nak(delay=delay)
            return False
        self._metrics.dead_letters.inc()
        await self._put_final(self._record(d, "dead", error))
        await d.msg.term()
        log.warning("order %s dead-lettered after %d attempts: %s", d.order_id, d.attempt, error)
        return True
