"""One delivery's life: admission (should it run at all?), the run, and the outcome it hands to the
settler (worker/outcome.py, the only place that writes status or acks).

Admission turns facts into a verdict, one rule each, in this order (`admit`, a pure function):
 1. cancelled (a cancel marker, or the status says so)      -> term, never run
 2. already done                                            -> ack, never run (the done-dedupe)
 3. dead or failed before, and not a DLQ replay             -> term (a replay starts with fresh
    counts from that record, once; its later deliveries carry their counts like any order's)
 4. its retry is already scheduled as a newer message       -> ack this leftover
 5. `processing` with a live lease held by another worker   -> defer until the lease ends
    (a redelivery after a NATS restart while its first run is alive; costs no attempt)
 6. `processing` with a lapsed lease, or held by this worker id while not running here, or no
    record at all on a redelivery once the orphan grace is over -> the previous run died: a crash
    (no record for a message published before a NATS restart also waits the grace: a restored
    consumer may resend a running job as a first delivery; found by the chaos rehearsal)
 7. out of runs (worker/outcome.py `Limits.spent`: crashes, deliveries or failed attempts)
                                                            -> dead-letter
 8. otherwise                                               -> run

What it costs (issue #11): a status record can only exist for a redelivery, a message that says
so (`Orderflow-Status-Check`: keyed orders, replays, rescheduled retries) or within the recovery
window after a reconnect; only those read it and write their lease before running. A first
delivery of a generated id reads nothing and writes its lease only once its job has run for
`lease_after_s`: a short job's one stored write is its `done`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from orderflow import contract
from worker import callback
from worker.handlers import CheckpointError, Handler, Job, PoisonError, StopSignal
from worker.hooks import Hooks
from worker.outcome import Books, Delivery, Kind, Limits, Outcome, Settler, keep_trying
from worker.payload import SEED, PayloadCodec
from worker.pool import Slot
from worker.timing import Timing
from worker.transport import Message, Meta, Transport, header

log = logging.getLogger(__name__)

_checkpoint_encoder = msgspec.json.Encoder()
_any = msgspec.json.Decoder()


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome | None = None  # settle without running
    crash: bool = False  # the previous run died: counted in the books
    orphan: bool = False  # no record of an earlier delivery yet: wait and look again
    lost_s: float = 0.0  # the dead run's work since its last checkpoint (a lower bound)
    books: Books | None = None  # the order's counts from its record; None: the delivery's own


def done(value: Any) -> Outcome:
    """A run that returned `value`: done with it as the result, or, when it cannot be stored (not
    JSON-serialisable, over MAX_RESULT_BYTES), a failed attempt that says why."""
    if value is None:
        return Outcome(Kind.DONE)
    try:
        raw = _checkpoint_encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        return Outcome(Kind.RETRY, f"ResultError: the handler's result is not JSON-serialisable: {exc}")
    if len(raw) > contract.MAX_RESULT_BYTES:
        return Outcome(
            Kind.RETRY,
            f"ResultError: the handler's result is {len(raw)} bytes encoded, over {contract.MAX_RESULT_BYTES}",
        )
    return Outcome(Kind.DONE, result=msgspec.Raw(raw))


def admit(
    d: Delivery,
    previous: contract.StatusRecord | None,
    *,
    cancelled: bool,
    worker_id: str,
    running_here: bool,
    limits: Limits,
    lease_s: float,
    orphan_checked: bool = False,
    suspect: bool = False,
    now: float | None = None,
) -> Verdict:
    """The rules above. The verdict carries the order's books as its status record has them
    (`books`), for the pipeline to run or settle the delivery with; `d` is not changed."""
    t = time.time() if now is None else now
    replay = bool(header(d.msg, contract.H_REPLAY))
    if cancelled or (previous is not None and previous.status == "cancelled"):
        return Verdict(Outcome(Kind.ALREADY_CANCELLED))
    crash, lost = False, 0.0
    books = d.books
    if previous is not None:
        status = previous.status
        if status == "done":
            return Verdict(Outcome(Kind.ALREADY_DONE))
        if status in ("dead", "failed") and not replay:
            return Verdict(Outcome(Kind.ALREADY_FINAL))
        if status == "queued" and previous.scheduled and books.failed < previous.attempts:
            return Verdict(Outcome(Kind.SUPERSEDED))
        # A replay starts afresh from the final record it was replayed from, once: the replayed
        # message carries its header on every redelivery, and from its first failure on the record
        # is its own (queued), so from then on its books carry over like any order's (else a failing
        # replay ran at attempt 1 with no backoff until the delivery cap, 101 times).
        if not (replay and status in ("dead", "failed")):
            books = Books.of(previous).at_least(books)
        if status == "processing":
            lease_end = previous.lease_until or previous.updated_at + lease_s
            holder = previous.worker_id
            if running_here:
                outcome = Outcome(Kind.RUNNING_ELSEWHERE, "running here under another delivery", 1.0)
                return Verdict(outcome, books=books)
            if holder != worker_id and lease_end > t:
                outcome = Outcome(Kind.RUNNING_ELSEWHERE, f"running on {holder}", lease_end - t + 0.5)
                return Verdict(outcome, books=books)
            crash = True  # lapsed, or our own id from a previous life of this worker
            start = max(previous.started_at or 0.0, previous.checkpoint_at or 0.0)
            lost = max(0.0, previous.updated_at - start) if start else 0.0
    elif d.meta.delivered > 1 or suspect:
        # Delivered before and nothing recorded: its first run died young (before its lease was
        # written), or is alive on a worker that has not yet re-leased it after a reconnect. After
        # a NATS restart the restored consumer may even have lost the earlier delivery and send
        # it again as a first one (`suspect`: published before the recovery window opened).
        if not orphan_checked:
            return Verdict(orphan=True)
        crash = d.meta.delivered > 1
    if crash:
        books = books.with_crash()
    return Verdict(limits.spent(books, d.deliveries), crash, books=books, lost_s=lost)


class Run(Slot):
    """One slot's job: the pool's slot plus the delivery and what its heartbeats need."""

    __slots__ = ("delivery", "handing_back", "last_beat", "lock", "timeout_s")

    def __init__(self, key: int, timeout_s: float, delivery: Delivery) -> None:
        super().__init__(key, time.monotonic() + timeout_s)
        self.timeout_s = timeout_s
        self.delivery = delivery
        self.last_beat = self.started
        self.lock: asyncio.Lock | None = None  # checkpoints of one job, one at a time
        self.handing_back = False  # the handler called job.handback(): its return hands it back


class Recovery:
    """After a (re)connect or a JetStream leader change, for `window_s`: every delivery reads its
    status before running and writes its lease at once."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.until = 0.0
        self.opened_at = 0.0  # epoch s: messages published before it may have run before

    def open(self) -> None:
        self.until = time.monotonic() + self.window_s
        self.opened_at = time.time()

    def suspects(self, d: Delivery) -> bool:
        """Inside the window, a message published before it opened may be running elsewhere."""
        return self.active and d.meta.published_at < self.opened_at

    @property
    def active(self) -> bool:
        return time.monotonic() < self.until


class JobPipeline:
    """One task type's job path. The pool calls `open`, `run`, `beat` and `crashed`."""

    def __init__(
        self,
        task_type: str,
        handler: Handler,
        settler: Settler,
        transport: Transport,
        hooks: Hooks,
        timing: Timing,
        limits: Limits,
        worker_id: str,
        is_cancelled: Callable[[str], bool],
        recovery: Recovery,
        runs: Mapping[int, Run],
        codec: PayloadCodec = SEED,
        stopping: StopSignal | None = None,
        deliver: Handler | None = None,
    ) -> None:
        self.task_type = task_type
        # the built-in handler of callback jobs (worker/callback.py)
        self._deliver: Handler = deliver or _no_callbacks
        self._handler = handler
        self._codec = codec
        self._settler = settler
        self._t = transport
        self._hooks = hooks
        self._timing = timing
        self._limits = limits
        self._worker_id = worker_id
        self._is_cancelled = is_cancelled
        self._recovery = recovery
        self.stopping = stopping if stopping is not None else StopSignal()  # set by the drain
        self.handed_back_by_handlers = 0  # job.handback() then return, during a drain
        self.runs = runs  # the pool's running jobs, by stream sequence (worker/path.py)
        # Work a job's task does not carry: a crashed slot's settle, a give-back's, an adopted
        # delivery's in_progress. Kept here so that the drain can wait for them (`side_tasks`).
        self._side: set[asyncio.Task[None]] = set()

    # --- the pool's side ------------------------------------------------------------------
    def open(self, msg: Message, timeout_s: float) -> Run | None:
        meta = Meta(msg.reply)
        current = self.runs.get(meta.seq)
        if current is not None:
            self._adopt(current, msg, meta)
            return None
        return Run(meta.seq, timeout_s, Delivery(msg, meta, self.task_type))

    def _adopt(self, run: Run, msg: Message, meta: Meta) -> None:
        """The message of a job running here came again (a NATS restart): keep the one run, follow
        the newest delivery (its heartbeats and its ack go there), tell the server it is alive."""
        d = run.delivery
        d.msg, d.meta = msg, meta
        d.deliveries = max(d.deliveries, meta.delivered)
        run.last_beat = time.monotonic()
        self._hooks.adopted(d)
        log.warning("order %s redelivered while it runs here; the running job adopts it", d.order_id)
        self._side_task(self._t.in_progress(msg))

    async def run(self, run: Run) -> None:
        await self._process(run)

    async def beat(self, run: Run, now: float) -> None:
        """From the pool's ticker: in_progress when the last is heartbeat_s old, and the lease
        (first written once the job has run lease_after_s, then refreshed with every heartbeat)."""
        d = run.delivery
        t = self._timing
        first_lease = (
            d.lease_at is None and d.run_started is not None and now - run.started >= t.lease_after_s
        )
        if not first_lease and now - run.last_beat < t.heartbeat_s:
            return
        run.last_beat = now
        self._hooks.heartbeat(d)
        if d.order_id and d.run_started is not None and not run.settling:
            await self._settler.lease(d, confirm=False)  # in_progress with it
        else:
            await self._t.in_progress(d.msg)

    def crashed(self, run: Run, exc: BaseException) -> None:
        """The supervisor found the job's task dead of an error that escaped the handler contract:
        count a failed attempt and give the message back (not after ack_wait)."""
        d = run.delivery
        self._hooks.crashed("slot")
        log.error("slot crashed on order %s; restarting it", d.order_id or "?", exc_info=exc)
        if not run.settling:
            outcome = Outcome(Kind.SLOT_CRASHED, f"slot crashed: {type(exc).__name__}: {exc}")
            self._side_task(self._settle(run, outcome))

    def give_back(self, msg: Message) -> None:
        """A delivery the fetch loop will not start (it stopped fetching): the settler records that
        it ended cleanly and naks it; not an attempt."""
        d = Delivery(msg, Meta(msg.reply), self.task_type)
        d.order_id = contract.order_id_of(msg.data) or _fallback_id(msg, d.meta.seq)

        async def settle() -> None:
            kind = await self._settler.settle(d, Outcome(Kind.UNSTARTED))
            self._hooks.settled(d, kind, time.time() - d.started_at)

        self._side_task(settle())

    async def recover(self) -> None:
        """After a reconnect or a leader change: tell the server every running job is alive and
        re-write its lease now, before another worker can take a redelivery of it."""
        self._recovery.open()

        async def release(run: Run) -> None:
            d = run.delivery
            try:
                run.last_beat = time.monotonic()
                if d.order_id and d.run_started is not None:
                    await self._settler.lease(d, confirm=True)
                else:
                    await self._t.in_progress(d.msg)
            except Exception as exc:
                log.debug("re-lease of %s failed: %r", d.order_id, exc)

        # all at once: one round trip, well inside another worker's orphan grace
        await asyncio.gather(*(release(r) for r in list(self.runs.values()) if not r.settling))

    def _side_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    @property
    def side_tasks(self) -> frozenset[asyncio.Task[None]]:
        """The settles and heartbeats this pipeline started outside a job's task, still running."""
        return frozenset(self._side)

    # --- one job ----------------------------------------------------------------------------
    async def _process(self, run: Run) -> None:
        d = run.delivery
        msg = d.msg
        codec, handler = self._codec, self._handler
        if msg.headers and contract.H_CALLBACK_FOR in msg.headers:  # a callback job: built in
            codec, handler = callback.CODEC, self._deliver
        try:
            order, payload = codec.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            ref = contract.order_ref(msg.data)
            order_id = None if ref is None else ref.order_id
            d.callback_url = None if ref is None else ref.callback_url
            d.callback_secret = None if ref is None else ref.callback_secret
            if order_id is None:
                d.order_id = _fallback_id(msg, d.meta.seq)
                await self._settle(
                    run, Outcome(Kind.POISON, f"undecodable order: {exc}", reason="undecodable")
                )
                return
            # An order, but not of the payload this worker's handler takes (stored before a schema
            # changed, or by hand): dead-lettered with the reason, replayable once a handler takes it.
            d.order_id = order_id
            error = f"payload does not fit task type {self.task_type}'s: {exc}"
            await self._settle(run, Outcome(Kind.DEAD, error, reason="payload"))
            return
        d.order_id = order.order_id
        d.callback_url = order.callback_url
        d.callback_secret = order.callback_secret

        eager = d.meta.delivered > 1 or self._recovery.active
        check = eager or bool(header(msg, contract.H_STATUS_CHECK))
        verdict = Verdict()
        if self._is_cancelled(order.order_id):
            verdict = Verdict(Outcome(Kind.ALREADY_CANCELLED))
        elif check:
            verdict = await self._admit(d)
            if verdict.orphan:
                await self._t.in_progress(msg)
                await asyncio.sleep(self._timing.orphan_grace_s)
                verdict = await self._admit(d, orphan_checked=True)
        if verdict.crash:
            self._hooks.crash_found(d, verdict.lost_s)
            log.warning(
                "order %s: its previous run died (crash %d of %d)",
                d.order_id,
                d.books.crashes,
                self._limits.max_crashes,
            )
        if verdict.outcome is not None:
            await self._settle(run, verdict.outcome)
            return

        d.run_started = time.time()
        if eager:
            run.last_beat = time.monotonic()
            await self._settler.start_lease(d)
        self._hooks.started(d)
        resume = _any.decode(d.books.checkpoint) if d.books.checkpoint is not None else None
        job = Job(
            order,
            d.task_type,
            d.books.failed,
            d.deliveries,
            self._worker_id,
            resume,
            _Control(self, run),
            payload,
        )
        try:
            value = await handler(job)
            if run.handing_back:  # the handler checkpointed and gave the order back itself
                self.handed_back_by_handlers += 1
                outcome = Outcome(Kind.HANDED_BACK)
            else:
                outcome = done(value)
        except PoisonError as exc:
            outcome = Outcome(Kind.POISON, str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if run.stop_reason is None:
                if current is not None and current.cancelling():
                    raise  # the whole worker is being torn down
                outcome = Outcome(Kind.RETRY, "CancelledError raised inside the handler")
            else:
                while current is not None and current.cancelling():
                    current.uncancel()  # stopped on purpose (once, or cut short): settle it
                outcome = self._stopped(run)
        except Exception as exc:
            outcome = Outcome(Kind.RETRY, f"{type(exc).__name__}: {exc}")
        await self._settle(run, outcome)

    async def _admit(self, d: Delivery, orphan_checked: bool = False) -> Verdict:
        try:
            previous = await self._t.get_status(d.order_id)
        except Exception as exc:
            return Verdict(Outcome(Kind.RUNNING_ELSEWHERE, f"status unreadable ({type(exc).__name__})", 1.0))
        verdict = admit(
            d,
            previous,
            cancelled=False,
            worker_id=self._worker_id,
            running_here=any(
                r.delivery.order_id == d.order_id and r.delivery is not d for r in self.runs.values()
            ),
            limits=self._limits,
            lease_s=self._timing.lease_s,
            orphan_checked=orphan_checked,
            suspect=self._recovery.suspects(d),
        )
        if verdict.books is not None:
            d.books = verdict.books
        return verdict

    def _stopped(self, run: Run) -> Outcome:
        reason = run.stop_reason
        assert reason is not None
        if reason is Kind.TIMEOUT:
            return Outcome(Kind.TIMEOUT, f"timed out after {run.timeout_s:g}s")
        return Outcome(reason)

    async def _settle(self, run: Run, outcome: Outcome) -> None:
        run.settling = True
        d = run.delivery
        kind = await self._settler.settle(d, outcome)
        self._hooks.settled(d, kind, time.time() - d.started_at)

    # --- what a handler's Job calls ------------------------------------------------------------
    async def checkpoint(self, run: Run, state: Any) -> None:
        try:
            raw = _checkpoint_encoder.encode(state)
        except (TypeError, msgspec.EncodeError) as exc:
            raise CheckpointError(f"checkpoint state is not JSON-serialisable: {exc}") from None
        if len(raw) > contract.MAX_CHECKPOINT_BYTES:
            raise CheckpointError(
                f"checkpoint of {len(raw)} bytes is over the {contract.MAX_CHECKPOINT_BYTES}-byte limit"
            )
        d = run.delivery
        if run.lock is None:
            run.lock = asyncio.Lock()
        async with run.lock:
            try:
                run.last_beat = time.monotonic()
                await self._settler.checkpoint(d, msgspec.Raw(raw))
            except Exception as exc:
                raise CheckpointError(f"checkpoint not stored: {type(exc).__name__}: {exc}") from exc
        self._hooks.heartbeat(d)  # it sent an in_progress too
        self._hooks.checkpointed(d)

    async def record_run(
        self, run: Run, event: str, progress_s: float | None, length_s: float | None
    ) -> None:
        d = run.delivery
        record = contract.RunRecord(
            d.order_id, event, self._worker_id, d.attempt, time.time(), progress_s, length_s, d.task_type
        )
        # Through a failover like a status: a run record whose PubAck was lost with a connection
        # or a stream leader must not fail the handler's attempt (that ran finished work again).
        await keep_trying(lambda: self._t.record_run(record), f"order {d.order_id}: run record {event}")


class _Control:
    """The Job's line back to its run."""

    __slots__ = ("_pipeline", "_run", "stopping")

    def __init__(self, pipeline: JobPipeline, run: Run) -> None:
        self._pipeline = pipeline
        self._run = run
        self.stopping = pipeline.stopping

    def handback(self) -> None:
        self._run.handing_back = True

    async def checkpoint(self, state: Any) -> None:
        await self._pipeline.checkpoint(self._run, state)

    async def record(self, event: str, progress_s: float | None, length_s: float | None) -> None:
        await self._pipeline.record_run(self._run, event, progress_s, length_s)


async def _no_callbacks(job: Job) -> None:
    raise PoisonError("this worker delivers no callbacks")


def _fallback_id(msg: Message, seq: int) -> str:
    """The id of a message that is not an order: its subject's (`orders.<type>.<id>`, which a
    replay keeps), else its Nats-Msg-Id (`orders.<type>`, the older form), where that can be a
    status key and a DLQ subject token; else its stream sequence."""
    parts = msg.subject.split(".", 2)
    for candidate in (parts[2] if len(parts) == 3 else "", header(msg, contract.H_MSG_ID)):
        if contract.valid_order_id(candidate):
            return candidate
    return f"seq-{seq}"
