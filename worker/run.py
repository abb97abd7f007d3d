"""One run of a handler: its slot in the pool (`Run`), the handler's line back to it (`RunControl`:
checkpoints, run records, the hand-back) and what its return value comes to (`done`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from orderflow import contract
from worker.delivery import Delivery, Kind, Outcome
from worker.handlers import CheckpointError, StopSignal
from worker.hooks import Hooks
from worker.outcome import Settler
from worker.pool import Slot
from worker.transport import Transport, keep_trying

_encoder = msgspec.json.Encoder()


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


def done(value: Any) -> Outcome:
    """A run that returned `value`: done with it as the result, or, when it cannot be stored (not
    JSON-serialisable, over MAX_RESULT_BYTES), a failed attempt that says why."""
    if value is None:
        return Outcome(Kind.DONE)
    try:
        raw = _encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        return Outcome(Kind.RETRY, f"ResultError: the handler's result is not JSON-serialisable: {exc}")
    if len(raw) > contract.MAX_RESULT_BYTES:
        return Outcome(
            Kind.RETRY,
            f"ResultError: the handler's result is {len(raw)} bytes encoded, over {contract.MAX_RESULT_BYTES}",
        )
    return Outcome(Kind.DONE, result=msgspec.Raw(raw))


@dataclass(slots=True)
class RunControl:
    """The Job's line back to its run (worker/handlers.py): checkpoints, run records, hand-back."""

    _run: Run
    _settler: Settler
    _t: Transport
    _hooks: Hooks
    _worker_id: str
    stopping: StopSignal

    def handback(self) -> None:
        self._run.handing_back = True

    async def checkpoint(self, state: Any) -> None:
        run = self._run
        try:
            raw = _encoder.encode(state)
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

    async def record(self, event: str, progress_s: float | None, length_s: float | None) -> None:
        d = self._run.delivery
        record = contract.RunRecord(
            d.order_id, event, self._worker_id, d.attempt, time.time(), progress_s, length_s, d.task_type
        )
        # Through a failover like a status: a run record whose PubAck was lost with a connection
        # or a stream leader must not fail the handler's attempt (that ran finished work again).
        await keep_trying(lambda: self._t.record_run(record), f"order {d.order_id}: run record {event}")
