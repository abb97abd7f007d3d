"""One delivery's life: admission (worker/admission.py), the run (worker/run.py), and the outcome it
hands to the settler (worker/outcome.py, the only place that writes status or acks).

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
from typing import Any

import msgspec

from orderflow import contract
from worker import callback
from worker.admission import Recovery, Verdict, admit
from worker.delivery import Delivery, Kind, Limits, Outcome
from worker.handlers import Handler, Job, PoisonError, StopSignal
from worker.hooks import Hooks
from worker.outcome import Settler
from worker.payload import SEED, PayloadCodec
from worker.run import Run, RunControl, done
from worker.timing import Timing
from worker.transport import Message, Meta, Transport, header

log = logging.getLogger(__name__)

_any = msgspec.json.Decoder()


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
            RunControl(run, self._settler, self._t, self._hooks, self._worker_id, self.stopping),
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
