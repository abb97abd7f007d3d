"""The demo handler's simulated work: its length comes from the order id, it checkpoints and
resumes, ORDERFLOW_WORK_CHECKPOINTS=false makes every run start over, and a drain whose deadline
the rest of the job would not meet makes it checkpoint and hand itself back at once. In process: the Job's
control line is a stand-in that keeps the checkpoint and the run records in memory."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from orderflow.contract import Order
from orderflow.envsettings import load_settings
from worker.demo import register
from worker.handlers import Handler, Job, Registry, StopSignal


class StandInControl:
    """What a run's Job talks to: the last checkpoint and every run record, in memory."""

    def __init__(self) -> None:
        self.checkpoint_state: Any = None
        self.records: list[tuple[str, float | None, float | None]] = []
        self.stopping = StopSignal()
        self.handed_back = False

    def handback(self) -> None:
        self.handed_back = True

    async def checkpoint(self, state: Any) -> None:
        self.checkpoint_state = state

    async def record(self, event: str, progress_s: float | None, length_s: float | None) -> None:
        self.records.append((event, progress_s, length_s))


def demo(**env: str) -> Handler:
    registry = Registry()
    register(registry, load_settings("worker", {f"ORDERFLOW_{k}": v for k, v in env.items()}))
    return registry.get("default")


def job(order_id: str, control: StandInControl) -> Job:
    order = Order(order_id, 1, 1, "m", time.time())
    return Job(order, "default", 0, 1, "w-1", control.checkpoint_state, control)


async def run_for(handler: Handler, j: Job, seconds: float) -> None:
    """Run the handler, cancel it after `seconds` of its own work (a hand-back), let it unwind."""
    task = asyncio.ensure_future(handler(j))
    # Its first step first (the start record, its clock, up to its first wait), so that the
    # `seconds` are all work: on a loaded machine that step may start late (0.2468 s of 0.3 s).
    await asyncio.sleep(0)
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_an_orders_length_is_drawn_from_its_id_so_every_run_is_the_same_job() -> None:
    handler = demo(WORK_S="0.01-0.05")

    def length(order_id: str) -> float | None:
        control = StandInControl()
        asyncio.run(handler(job(order_id, control)))
        assert [e for e, _, _ in control.records] == ["start", "done"]
        return control.records[-1][2]

    assert length("c7-1") == length("c7-1")
    assert len({length(f"c7-{i}") for i in range(5)}) == 5


def test_a_handed_back_run_checkpoints_while_it_unwinds_and_the_next_run_resumes_there() -> None:
    handler = demo(WORK_S="5-6")
    control = StandInControl()
    asyncio.run(run_for(handler, job("o-1", control), 0.3))
    (start, _, length), (event, progress, _) = control.records
    assert (start, event) == ("start", "interrupted") and progress is not None and progress >= 0.25
    assert control.checkpoint_state == {"length_s": length, "done_s": round(progress, 3)}
    control.records.clear()
    asyncio.run(run_for(handler, job("o-1", control), 0.05))
    assert control.records[0] == ("start", round(progress, 3), length)


def test_with_checkpoints_off_a_handed_back_run_starts_over() -> None:
    handler = demo(WORK_S="5-6", WORK_CHECKPOINTS="false")
    control = StandInControl()
    asyncio.run(run_for(handler, job("o-1", control), 0.3))
    assert control.checkpoint_state is None
    (_, _, length), (event, progress, _) = control.records
    assert event == "interrupted" and progress is not None and progress >= 0.25
    control.records.clear()
    asyncio.run(run_for(handler, job("o-1", control), 0.05))
    assert control.records[0] == ("start", 0.0, length)


async def stop_after(control: StandInControl, seconds: float, deadline_s: float) -> None:
    await asyncio.sleep(seconds)
    control.stopping.set(time.monotonic() + deadline_s)


def test_a_drain_it_cannot_outlast_makes_it_checkpoint_and_hand_back_at_once() -> None:
    """
    1. A 5-6 s job runs for 0.3 s; the worker starts to drain with 2 s left before the hand-back.
    2. The rest does not fit: within a moment it checkpoints what it did, records `interrupted`,
       calls job.handback() and returns (no cancel, no exception).
    """
    handler = demo(WORK_S="5-6")
    control = StandInControl()

    async def scenario() -> float:
        stopper = asyncio.ensure_future(stop_after(control, 0.3, 2.0))
        started = time.monotonic()
        await handler(job("o-1", control))
        await stopper
        return time.monotonic() - started

    took = asyncio.run(scenario())
    assert control.handed_back and took < 0.3 + 0.25
    (_, _, length), (event, progress, _) = control.records
    assert event == "interrupted" and progress is not None and 0.25 <= progress < 0.6
    assert control.checkpoint_state == {"length_s": length, "done_s": round(progress, 3)}


def test_a_drain_with_time_enough_lets_it_finish() -> None:
    handler = demo(WORK_S="1")
    control = StandInControl()

    async def scenario() -> None:
        stopper = asyncio.ensure_future(stop_after(control, 0.2, 5.0))
        await handler(job("o-2", control))
        await stopper

    asyncio.run(scenario())
    assert not control.handed_back
    assert [e for e, _, _ in control.records] == ["start", "done"]
