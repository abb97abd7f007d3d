"""The one place that writes an order's status and acks, naks, terms, reschedules or dead-letters
its message. Nothing else in the worker writes ORDER_STATUS.

JetStream facts this relies on:
- `nak(delay)` redelivers after `delay`; a bare nak redelivers at once (used to hand back).
- `term` stops redelivery for good; in a work-queue stream it also removes the message.
- An acked message is never redelivered, so `done` is stored (confirmed) *before* the ack, and
  the ack itself need not be confirmed: a lost ack redelivers into the done-dedupe.
- A `nak(delay)` keeps its message ack-pending for the whole delay (nats-server 2.15), so a long
  retry delay would count as work in progress for the autoscaler. Such a retry leaves the
  consumer instead: a scheduled message (`Nats-Schedule: @at <time>`, nats-server 2.12, stream
  `allow_msg_schedules`) that the server copies to its target at the retry time (without its
  Nats-Msg-Id) and then purges, and the original is
  acked. Scheduling needs a discard-old stream (ORDERS is discard-new: full means refuse), so the
  schedule lives in ORDER_RETRIES (`orderflow.schedule.<type>.<id>`), fires to
  `orderflow.retry.<type>.<id>`, and ORDERS sources that back as `orders.<type>.<id>`. The copy
  carries the counts and `Orderflow-Status-Check`, so its worker reads the status.
"""

from __future__ import annotations

import datetime
import logging
import random
import time

import msgspec

from orderflow import contract, tracing
from worker import callback
from worker.delivery import ERROR_CLASSES, FAILED, Books, Delivery, Kind, Limits, Outcome
from worker.transport import Transport, header, keep_trying

log = logging.getLogger(__name__)


def retry_delay_s(failed: int, base_s: float, max_s: float, rand: float | None = None) -> float:
    """Exponential in the failed attempts, jittered in [50 %, 100 %]: retry n+1 never waits less than
    retry n, and a burst of failures does not come back as a burst."""
    r = random.random() if rand is None else rand
    exponential: float = base_s * 2.0 ** max(0, failed - 1)
    return min(max_s, exponential) * (0.5 + 0.5 * r)


def _short(error: str | None) -> str | None:
    return None if error is None else error[:500]


def _rfc3339(epoch_s: float) -> str:
    return datetime.datetime.fromtimestamp(epoch_s, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Settler:
    def __init__(
        self,
        transport: Transport,
        worker_id: str,
        limits: Limits,
        lease_s: float,
        schedules: bool = False,
    ) -> None:
        self._t = transport
        self._worker_id = worker_id
        self._limits = limits
        self._lease_s = lease_s
        self.schedules = schedules  # the stream takes scheduled messages (nats-server 2.12+)

    # --- records ----------------------------------------------------------------------------
    def record(
        self,
        d: Delivery,
        status: str,
        error: str | None = None,
        *,
        retry_at: float | None = None,
        scheduled: bool = False,
        result: msgspec.Raw | None = None,
    ) -> contract.StatusRecord:
        """The ORDER_STATUS value for a delivery as this worker sees it now. A `processing` record
        is a lease; a final one drops the checkpoint."""
        now = time.time()
        b = d.books
        final = status in contract.FINAL_STATUSES
        ran = d.run_started is not None
        run_s = b.run_s + (now - d.run_started if d.run_started is not None else 0.0)
        return contract.StatusRecord(
            d.order_id,
            status,
            b.failed,
            now,
            worker_id=self._worker_id,
            task_type=d.task_type,
            started_at=d.run_started,
            first_started_at=b.first_started_at or d.run_started,
            runs=b.runs + 1 if ran else b.runs,
            result=result if result is not None else contract.NO_CHECKPOINT,
            finished_at=now if final else None,
            error=_short(error),
            deliveries=d.deliveries,
            handbacks=b.handbacks,
            crashes=b.crashes,
            lease_until=now + self._lease_s if status == "processing" else None,
            checkpoint=b.checkpoint if b.checkpoint is not None and not final else contract.NO_CHECKPOINT,
            checkpoint_at=None if final else b.checkpoint_at,
            retry_at=retry_at,
            scheduled=scheduled,
            run_s=round(run_s, 3),
            client=d.client,
            error_class=d.error_class if error is not None else None,
        )

    async def lease(self, d: Delivery, confirm: bool) -> None:
        """Hold (or refresh) the order's lease: `processing` until now + lease_s. Every lease write
        also restarts the message's ack_wait clock (in_progress), so a lease never outlives it: a
        dead holder's lease has lapsed by the time its message comes back."""
        d.lease_at = time.monotonic()
        await self._t.in_progress(d.msg)
        # The in_progress may have waited (nats-py flushing its buffer through a reconnect) while
        # the job ended: its outcome's status is then on its way, and a `processing` written now
        # would land after it and undo it for good (a finished order `processing`, found by the
        # chaos rehearsal around a NATS restart). Checked with no await before the publish, so the
        # lease is either written before the outcome's status or not at all.
        if d.settling:
            return
        await self._t.put_status(self.record(d, "processing"), confirm)

    async def start_lease(self, d: Delivery) -> None:
        """The confirmed lease a run starts under (a redelivery, the recovery window), written
        through a failover like a status: a PubAck lost with a connection or a stream leader must
        not cost the order an attempt. Only here, before the handler runs: a lease retried later
        could land after the run's `done` and undo it (found so: a recovery's re-lease, retried,
        left finished orders `processing` for good)."""
        d.lease_at = time.monotonic()
        await self._t.in_progress(d.msg)
        await self._put_confirmed(self.record(d, "processing"))

    async def checkpoint(self, d: Delivery, state: msgspec.Raw) -> None:
        d.books.checkpoint = state
        d.books.checkpoint_at = time.time()
        d.lease_at = time.monotonic()
        await self._t.in_progress(d.msg)
        await self._put_confirmed(self.record(d, "processing"), attempts=4)

    # --- the mapping --------------------------------------------------------------------------
    async def settle(self, d: Delivery, outcome: Outcome) -> Kind:
        """Acknowledge the delivery as the outcome says. Returns what was actually done."""
        d.settling = True  # before any await: no lease after this (see lease)
        kind = outcome.kind
        t = self._t
        b = d.books
        # A dead letter after failed attempts keeps the class of the last failure.
        d.error_class = ERROR_CLASSES.get(kind, d.error_class)
        if kind in FAILED:
            b.failed += 1
            spent = None if kind is Kind.POISON else self._limits.spent(b, d.deliveries)
            if spent is not None:
                error = f"{spent.error}; last: {outcome.error}"
                return await self._dead_letter(d, error, spent.reason or "attempts")
        if kind is Kind.DONE:
            await self._final(d, self.record(d, "done", result=outcome.result))
            await t.ack(d.msg)
        elif kind is Kind.ALREADY_DONE or kind is Kind.SUPERSEDED:
            await t.ack(d.msg)
        elif kind is Kind.ALREADY_FINAL:
            await t.term(d.msg)
        elif kind is Kind.ALREADY_CANCELLED or kind is Kind.CANCELLED:
            error = "cancelled on request" if kind is Kind.CANCELLED else "cancelled before it ran"
            await self._final(d, self.record(d, "cancelled", error))
            await t.term(d.msg)
            await t.forget_cancel(d.order_id)
        elif kind in (Kind.RETRY, Kind.TIMEOUT, Kind.SLOT_CRASHED):
            delay = retry_delay_s(b.failed, self._limits.retry_base_s, self._limits.retry_max_s)
            if kind is Kind.SLOT_CRASHED:
                delay = min(delay, 1.0)
            if delay > self._limits.reschedule_after_s and self.schedules:
                await self._reschedule(d, delay, outcome.error)
            else:
                # Confirmed before the nak: the next worker must not find this worker's lease.
                await self._put_confirmed(
                    self.record(d, "queued", outcome.error, retry_at=time.time() + delay)
                )
                await t.nak(d.msg, delay)
            log.info(
                "order %s attempt %d failed (%s); retry in %.2fs", d.order_id, b.failed, outcome.error, delay
            )
        elif kind is Kind.POISON:
            # Never retried, but copied to the DLQ like a dead order: a handler that misclassifies
            # an error (or a payload a newer release can read) can be replayed, not lost.
            return await self._dead_letter(
                d, outcome.error or "poison", outcome.reason or "poison", Kind.POISON
            )
        elif kind is Kind.DEAD:
            return await self._dead_letter(d, outcome.error or "dead", outcome.reason or "attempts")
        elif kind is Kind.HANDED_BACK:
            b.handbacks += 1
            await self._put_confirmed(self.record(d, "queued", f"handed back by {self._worker_id}"))
            # Immediate redelivery: another worker picks it up now instead of after ack_wait.
            await t.nak(d.msg)
        elif kind is Kind.RUNNING_ELSEWHERE:
            # Leave the status (and the lease) to the worker running it; look again later.
            await t.nak(d.msg, outcome.delay_s)
            log.warning("order %s delivered again while %s; deferred", d.order_id, outcome.error)
        elif kind is Kind.UNSTARTED:
            await self._return_unstarted(d)
        return kind

    async def _return_unstarted(self, d: Delivery) -> None:
        """A delivery this worker will not run (it stopped fetching): record that it ended cleanly,
        so the next delivery does not take it for a run that died, then nak it."""
        previous: contract.StatusRecord | None = None
        if d.meta.delivered > 1 or header(d.msg, contract.H_STATUS_CHECK):
            try:
                previous = await self._t.get_status(d.order_id)
            except Exception as exc:
                log.debug("status of %s unread (%r)", d.order_id, exc)
        live_elsewhere = (
            previous is not None
            and previous.status == "processing"
            and previous.worker_id != self._worker_id
            and (previous.lease_until or 0) > time.time()
        )
        final = previous is not None and previous.status in contract.FINAL_STATUSES
        if not (live_elsewhere or final):
            if previous is not None:
                d.books = Books.of(previous)
            try:
                await self._t.put_status(
                    self.record(d, "queued", f"returned unstarted by {self._worker_id}"), True
                )
            except Exception as exc:  # the next delivery then waits its orphan grace: still correct
                log.debug("unstarted record of %s not stored (%r)", d.order_id, exc)
        await self._t.nak(d.msg, self._limits.unstarted_delay_s or None)

    async def _reschedule(self, d: Delivery, delay_s: float, error: str | None) -> None:
        retry_at = time.time() + delay_s
        tail = f"{d.task_type}.{d.order_id}"
        headers = {k: v for k, v in (d.msg.headers or {}).items() if not k.startswith("Nats-")}
        headers.update(
            {
                contract.H_SCHEDULE: f"@at {_rfc3339(retry_at)}",
                contract.H_SCHEDULE_TARGET: contract.RETRY_PREFIX + tail,
                contract.H_STATUS_CHECK: "1",
                contract.H_DELIVERIES: str(d.deliveries),
                contract.H_FAILED_ATTEMPTS: str(d.books.failed),
                contract.H_HANDBACKS: str(d.books.handbacks),
                contract.H_CRASHES: str(d.books.crashes),
                # A second reschedule of the same attempt (this one's ack got lost) is a duplicate.
                contract.H_MSG_ID: f"{d.order_id}.retry.{d.books.failed}",
            }
        )
        await self._t.publish(contract.SCHEDULE_PREFIX + tail, d.msg.data, headers)
        await self._put_confirmed(self.record(d, "queued", error, retry_at=retry_at, scheduled=True))
        await self._t.ack(d.msg)

    async def _final(self, d: Delivery, record: contract.StatusRecord) -> None:
        """A final status, and first the job that delivers the order's callback (if it has one):
        published before the status, so no crash leaves a final order without it (a repeat of
        this step publishes it once: its Nats-Msg-Id is its id)."""
        if d.callback_url is not None:
            subject, data, headers = callback.job_message(
                d.task_type, d.callback_url, record, d.callback_secret, d.client
            )
            headers.update(tracing.context_of(d.msg.headers))  # its delivery joins the order's trace
            await keep_trying(
                lambda: self._t.publish(subject, data, headers), f"order {d.order_id}: callback job"
            )
        await self._put_confirmed(record)

    async def _put_confirmed(self, record: contract.StatusRecord, attempts: int = 12) -> None:
        """A status that must be stored before the message is acked, termed or naked. Through a
        NATS restart keep trying: the job stays in its slot meanwhile, so heartbeats keep it from
        redelivery."""
        await keep_trying(
            lambda: self._t.put_status(record, confirm=True),
            f"order {record.order_id}: status {record.status}",
            attempts,
        )

    async def _dead_letter(self, d: Delivery, error: str, reason: str, kind: Kind = Kind.DEAD) -> Kind:
        """A copy in ORDERS_DLQ, then the final status (`dead`, or `failed` for poison), then term."""
        # The order's own headers, not the server's (Nats-*): the copy of a fired schedule carries
        # Nats-Scheduler and Nats-Schedule-Next, and ORDERS_DLQ (no schedules) refuses a message
        # with them (err 10188, "message schedules is disabled"): the dead letter never landed.
        headers = {k: v for k, v in (d.msg.headers or {}).items() if not k.startswith("Nats-")}
        headers.update(
            {
                contract.H_ERROR: _short(error) or "",
                contract.H_REASON: reason,
                contract.H_ATTEMPTS: str(d.books.failed),
                contract.H_DELIVERIES: str(d.deliveries),
                contract.H_CRASHES: str(d.books.crashes),
                contract.H_HANDBACKS: str(d.books.handbacks),
                contract.H_ORDER_ID: d.order_id,
                contract.H_SUBJECT: d.msg.subject,
                contract.H_WORKER: self._worker_id,
            }
        )
        try:
            await self._t.publish(f"{contract.DLQ_PREFIX}{d.task_type}.{d.order_id}", d.msg.data, headers)
        except Exception as exc:
            # Never term what is not safely in the DLQ: try again later.
            # The record keeps the counts, so the next delivery dead-letters it again at once.
            delay = retry_delay_s(d.books.failed, self._limits.retry_base_s, self._limits.retry_max_s)
            log.error("order %s: dead-letter publish failed (%s); nak %.1fs", d.order_id, exc, delay)
            try:
                await self._t.put_status(self.record(d, "queued", f"dead-letter pending: {error}"), True)
            except Exception as put_exc:
                log.debug("order %s: pending dead-letter not recorded (%r)", d.order_id, put_exc)
            await self._t.nak(d.msg, delay)
            return Kind.RETRY
        await self._final(d, self.record(d, "failed" if kind is Kind.POISON else "dead", error))
        await self._t.term(d.msg)
        log.warning("order %s dead-lettered (%s): %s", d.order_id, reason, error)
        return kind
