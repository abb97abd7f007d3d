"""A capacity-bounded pool of job slots for one task type.

Each started message is a task in `running` (one slot); its exceptions surface in the supervisor
callback. While a job runs, one heartbeat ticker per pool sends `in_progress` for it, paced from
the consumer's ack_wait as the server has it, so a job may run for hours without redelivery.

A NATS restart can still redeliver a message whose first run is alive: the restored consumer
times a delivery from a stale timestamp, and `in_progress` does not take a message off the
server's redelivery queue once it is there (nats-server `progressUpdate` only moves the clock).
So the pool keeps guarantee 2 itself:
- redelivered to this worker: the running job adopts the newer delivery, no second run;
- redelivered to another worker: the heartbeat also refreshes a lease (the `processing` status's
  `updated_at`); a worker that finds a fresh lease held by someone else defers the message.
  The lease lasts 0.75 x ack_wait: a live holder refreshes it at least every ack_wait/2, and a dead
  holder's message only comes back a full ack_wait after its last heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from nats.aio.msg import Msg

from orderflow import contract
from orderflow.config import TaskType
from orderflow.metrics import WorkerMetrics
from worker.handlers import Handler, Job, PoisonError
from worker.outcome import Delivery, Kind, Outcome, Settler, status_record
from worker.status import StatusStore

log = logging.getLogger(__name__)


class Running:
    """One slot's job: the delivery and why it might be stopped from outside."""

    __slots__ = ("deadline", "delivery", "last_beat", "settling", "stop_reason", "task")

    def __init__(self, delivery: Delivery, deadline: float) -> None:
        self.delivery = delivery
        self.deadline = deadline  # monotonic; the hard per-job timeout
        self.settling = False  # once settling, a job is no longer stopped from outside
        self.last_beat = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.stop_reason: Kind | None = None  # CANCELLED or HANDED_BACK when stopped from outside


class Pool:
    def __init__(
        self,
        task_type: TaskType,
        handler: Handler,
        settler: Settler,
        status: StatusStore,
        metrics: WorkerMetrics,
        worker_id: str,
        heartbeat_s: float,
        max_deliver: int,
        on_load_change: Callable[[], None] = lambda: None,
        lease_s: float | None = None,
    ) -> None:
        self.task_type = task_type
        self.capacity = task_type.concurrency
        self.running: dict[int, Running] = {}  # by stream sequence: one run per message
        self._lease_s = lease_s if lease_s is not None else heartbeat_s * 2.25
        self._handler = handler
        self._settler = settler
        self._status = status
        self._metrics = metrics
        self._worker_id = worker_id
        self._heartbeat_s = heartbeat_s
        self._max_deliver = max_deliver
        self._on_load_change = on_load_change
        self._slot_freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._side_tasks: set[asyncio.Task[None]] = set()
        # Read at scrape time rather than updated (with a lock) twice per job.
        metrics.in_flight.labels(task_type.name).set_function(lambda: len(self.running))
        metrics.pool_slots.labels(task_type.name).set(self.capacity)
        # Metric children resolved once: labels() takes a lock and builds a tuple per call.
        self._durations = {k: metrics.task_duration.labels(task_type.name, k.value) for k in Kind}
        self._done = metrics.work_done.labels("done")
        self._error = metrics.work_done.labels("error")

    # --- capacity ------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self.capacity - len(self.running)

    async def wait_for_free_slot(self) -> int:
        """Free slots now, or after one is freed or `wake()` is called (then possibly 0)."""
        if self.free_slots <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()
        return self.free_slots

    def wake(self) -> None:
        """Wake a fetch loop waiting for a free slot (it re-checks whether to stop)."""
        self._slot_freed.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    # --- running jobs -------------------------------------------------------------------
    def start(self, msg: Msg) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream
        current = self.running.get(seq)
        if current is not None:
            self._adopt(current, msg)
            return
        delivery = Delivery(msg, "", self.task_type.name, meta.num_delivered, time.time())
        job = Running(delivery, time.monotonic() + self.task_type.timeout_s)
        self.running[seq] = job
        self._idle.clear()
        job.task = asyncio.create_task(self._run(job), name=f"job-{seq}")
        job.task.add_done_callback(lambda t: self._finished(seq, t))
        self._on_load_change()

    def _adopt(self, job: Running, msg: Msg) -> None:
        """The message of a job running here came again: keep the one run, follow the newest
        delivery (its heartbeats and its ack go there), and tell the server it is in progress."""
        job.delivery.msg = msg
        job.last_beat = time.monotonic()
        self._metrics.redeliveries.inc()
        log.warning(
            "order %s redelivered while it runs here; the running job adopts it", job.delivery.order_id
        )
        self._background(msg.in_progress())

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _finished(self, key: int, task: asyncio.Task[None]) -> None:
        """Supervisor: frees the slot; a job task that died of an unexpected error is a crashed
        slot: counted, logged with its traceback, its message handed back, the slot reused."""
        job = self.running.pop(key, None)
        self._slot_freed.set()
        if not self.running:
            self._idle.set()
        self._on_load_change()
        if task.cancelled() or task.exception() is None or job is None:
            return
        exc = task.exception()
        self._metrics.slot_restarts.labels("slot").inc()
        log.error("slot crashed on order %s; restarting it", job.delivery.order_id or "?", exc_info=exc)
        d = job.delivery
        if not d.msg._ackd:
            # Not the normal retry path (that is outcome.py); give the lease up and make sure the
            # message is not held until ack_wait by a slot that no longer exists.
            self._background(self._release_crashed(d))

    async def _release_crashed(self, d: Delivery) -> None:
        if d.order_id:
            await self._status.put(self._record(d, "queued", "slot crashed"))
        await d.msg.nak(delay=1.0)

    def _record(self, d: Delivery, status: str, error: str | None = None) -> contract.StatusRecord:
        return status_record(d, status, self._worker_id, error)

    def find(self, order_id: str) -> Running | None:
        for job in self.running.values():
            if job.delivery.order_id == order_id:
                return job
        return None

    def stop_job(self, job: Running, reason: Kind) -> None:
        """Cancel a running job from outside (cancel request or drain hand-back)."""
        if job.stop_reason is None and not job.settling and job.task is not None and not job.task.done():
            job.stop_reason = reason
            job.task.cancel()

    async def enforce_timeouts(self) -> None:
        """The hard per-job timeout: one sweeper per pool instead of a timer per job, checking at a
        tenth of the timeout (at most every second)."""
        interval = min(1.0, self.task_type.timeout_s / 10)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for job in list(self.running.values()):
                if job.deadline <= now:
                    self.stop_job(job, Kind.TIMEOUT)

    async def heartbeat(self) -> None:
        """in_progress for every job whose last one is an interval (ack_wait/3) old, checked every half
        interval: a running job is never silent for more than half of ack_wait."""
        while True:
            await asyncio.sleep(self._heartbeat_s / 2)
            now = time.monotonic()
            for job in list(self.running.values()):
                if now - job.last_beat >= self._heartbeat_s and job.stop_reason is None:
                    job.last_beat = now
                    d = job.delivery
                    try:
                        await d.msg.in_progress()
                        if d.order_id and not job.settling:
                            await self._status.put(self._record(d, "processing"))  # the lease
                        self._metrics.heartbeats.inc()
                    except Exception as exc:  # disconnected: the next tick tries again
                        log.debug("heartbeat failed: %r", exc)

    # --- one job ----------------------------------------------------------------------------
    async def _run(self, job: Running) -> None:
        try:
            await self._process(job)
        except asyncio.CancelledError:
            if job.stop_reason is None or job.settling:
                raise  # the whole worker is being torn down
            # Stopped from outside before the handler ran (or between its steps).
            await self._settle(job, self._stopped(job))

    def _stopped(self, job: Running) -> Outcome:
        assert job.stop_reason is not None
        if job.stop_reason is Kind.TIMEOUT:
            return Outcome(Kind.TIMEOUT, f"timed out after {self.task_type.timeout_s:g}s")
        return Outcome(job.stop_reason)

    async def _process(self, job: Running) -> None:
        d = job.delivery
        msg = d.msg
        # Start the ack_wait clock at delivery: after a nats-server restart a never-acked delivery is
        # timed from the message's publish time, so a job that queued longer than ack_wait would be
        # redelivered at once while it still runs here (found by `orderflow chaos`).
        await msg.in_progress()
        if d.attempt > 1:
            self._metrics.redeliveries.inc()
        self._metrics.attempts.observe(d.attempt)
        try:
            order = contract.decode_order(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            d.order_id = (msg.headers or {}).get(
                contract.H_MSG_ID, ""
            ) or f"seq-{msg.metadata.sequence.stream}"
            await self._settle(job, Outcome(Kind.POISON, f"undecodable order: {exc}"))
            return
        d.order_id = order.order_id

        previous = await self._status.get(order.order_id)
        if previous is not None and previous.status in ("done", "cancelled"):
            self._metrics.deduplicated.inc()
            kind = Kind.ALREADY_DONE if previous.status == "done" else Kind.ALREADY_CANCELLED
            await self._settle(job, Outcome(kind))
            return
        if (
            previous is not None
            and previous.status == "processing"
            and previous.worker_id not in (None, self._worker_id)
            and time.time() - previous.updated_at < self._lease_s
        ):
            # Its first run is alive on another worker (a redelivery after a NATS restart).
            delay = self._lease_s - (time.time() - previous.updated_at) + 0.5
            await self._settle(
                job, Outcome(Kind.RUNNING_ELSEWHERE, f"running on {previous.worker_id}", delay)
            )
            return
        if d.attempt > self._max_deliver:
            # Delivered again after the last allowed attempt (that attempt's worker died).
            await self._settle(job, Outcome(Kind.DEAD, f"no result after {d.attempt - 1} deliveries"))
            return

        await self._status.put(self._record(d, "processing"))

        async def record(event: str) -> None:
            await self._status.record_run(order.order_id, event, self._worker_id, d.attempt)

        job_ctx = Job(order, d.task_type, d.attempt, self._worker_id, record)
        try:
            await self._handler(job_ctx)
            outcome = Outcome(Kind.DONE)
        except PoisonError as exc:
            outcome = Outcome(Kind.POISON, str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            if job.stop_reason is None:
                raise
            outcome = self._stopped(job)
        except Exception as exc:
            outcome = Outcome(Kind.RETRY, f"{type(exc).__name__}: {exc}")
        await self._settle(job, outcome)

    async def _settle(self, job: Running, outcome: Outcome) -> None:
        job.settling = True
        d = job.delivery
        kind = await self._settler.settle(d, outcome)
        m = self._metrics
        self._durations[kind].observe(time.time() - d.started_at)
        if kind in (Kind.DONE, Kind.ALREADY_DONE):
            self._done.inc()
        elif kind in (Kind.RETRY, Kind.TIMEOUT, Kind.POISON, Kind.DEAD):
            self._error.inc()
        elif kind is Kind.HANDED_BACK:
            m.handed_back.inc()
        elif kind is Kind.CANCELLED:
            m.cancelled.inc()
