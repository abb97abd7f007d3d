"""A capacity-bounded pool of job slots: the slots, their supervisor and the tickers. It knows no
order, status or metric: what a job is and does belongs to its pipeline (worker/job.py).

Each started message is a task in `running` (one slot); its exceptions surface in the supervisor
callback, which frees the slot and tells the pipeline. One ticker per pool drives every running
job's heartbeat and enforces the hard per-job timeout, instead of a timer per job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

from worker.delivery import Kind
from worker.timing import Timing
from worker.transport import Message

log = logging.getLogger(__name__)


class Slot:
    """What the pool keeps of one running job; the pipeline subclasses it with the job itself."""

    __slots__ = ("cut_timer", "deadline", "key", "settling", "started", "stop_reason", "task")

    def __init__(self, key: int, deadline: float) -> None:
        self.key = key
        self.deadline = deadline  # monotonic; the hard per-job timeout
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.settling = False  # once settling, a job is no longer stopped from outside
        self.stop_reason: Kind | None = None  # CANCELLED, HANDED_BACK or TIMEOUT when stopped
        self.cut_timer: asyncio.TimerHandle | None = None


# The pipeline's own slot type: the pool hands each slot back to the pipeline that made it, typed.
S = TypeVar("S", bound=Slot)


class Pipeline(Protocol[S]):
    def open(self, msg: Message, timeout_s: float) -> S | None:
        """A slot for a new delivery, or None when the delivery belongs to a job already running
        here (adopted: no second run)."""

    async def run(self, slot: S) -> None: ...
    async def beat(self, slot: S, now: float) -> None: ...
    def crashed(self, slot: S, exc: BaseException) -> None: ...


class Pool(Generic[S]):
    def __init__(
        self,
        name: str,
        capacity: int,
        timeout_s: float,
        pipeline: Pipeline[S],
        timing: Timing,
        running: dict[int, S] | None = None,
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.timeout_s = timeout_s
        # by key; `running`: a dict the pipeline reads too (worker/path.py)
        self.running: dict[int, S] = {} if running is None else running
        self._pipeline = pipeline
        self._timing = timing
        self._idle = asyncio.Event()
        self._idle.set()
        self.on_free: Callable[[], None] = lambda: None  # the fetch loop's wake-up

    # --- capacity ------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self.capacity - len(self.running)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def __iter__(self) -> Iterator[S]:
        return iter(list(self.running.values()))

    # --- running jobs -------------------------------------------------------------------
    def start(self, msg: Message) -> None:
        slot = self._pipeline.open(msg, self.timeout_s)
        if slot is None:
            return
        self.running[slot.key] = slot
        self._idle.clear()
        slot.task = asyncio.create_task(self._pipeline.run(slot))
        slot.task.add_done_callback(lambda t: self._finished(slot, t))

    def _finished(self, slot: S, task: asyncio.Task[None]) -> None:
        """Supervisor: frees the slot; a job task that died of an unexpected error is a crashed
        slot, and its pipeline gives the message back; the slot is reused."""
        if self.running.get(slot.key) is slot:
            del self.running[slot.key]
        if slot.cut_timer is not None:
            slot.cut_timer.cancel()
        self.on_free()
        if not self.running:
            self._idle.set()
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._pipeline.crashed(slot, exc)

    def stop(self, slot: Slot, reason: Kind, unwind_s: float | None = None) -> None:
        """Stop a running job from outside (cancel request, hard timeout, hand-back). With
        `unwind_s` the handler gets that long to unwind (a checkpoint while it does is awaited);
        then it is cut short."""
        task = slot.task
        if slot.stop_reason is not None or slot.settling or task is None or task.done():
            return
        slot.stop_reason = reason
        task.cancel()
        if unwind_s is not None:
            slot.cut_timer = asyncio.get_running_loop().call_later(unwind_s, self._cut, slot)

    @staticmethod
    def _cut(slot: Slot) -> None:
        if not slot.settling and slot.task is not None and not slot.task.done():
            slot.task.cancel()

    async def ticker(self) -> None:
        """Heartbeats for every running job and the hard per-job timeout, on one clock."""
        tick = min(self._timing.tick_s, self._timing.timeout_tick_s(self.timeout_s))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for slot in list(self.running.values()):
                if slot.settling:
                    continue
                if slot.deadline <= now:
                    self.stop(slot, Kind.TIMEOUT)
                elif slot.stop_reason is None:
                    try:
                        await self._pipeline.beat(slot, now)
                    except Exception as exc:  # disconnected: the next tick tries again
                        log.debug("heartbeat failed: %r", exc)
