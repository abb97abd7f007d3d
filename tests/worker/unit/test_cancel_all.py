"""The drain's last phase stops the background tasks (worker/drain.py `cancel_all`), even one
that loses a cancel. In process, no NATS."""

from __future__ import annotations

import asyncio
import time

from worker.drain import cancel_all


async def loses_one_cancel() -> None:
    """What Python 3.11's wait_for does when the awaited answer arrives with the cancel: the
    first cancel is dropped, the loop goes on."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    await asyncio.Event().wait()  # carries on, until cancelled again


async def ignores_cancels(release: asyncio.Event) -> None:
    while not release.is_set():
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass


def test_a_task_that_loses_a_cancel_is_cancelled_again_and_stops() -> None:
    async def scenario() -> tuple[list[str], float, bool]:
        tasks = [
            asyncio.create_task(loses_one_cancel(), name="sampler"),
            asyncio.create_task(asyncio.sleep(3600)),
        ]
        await asyncio.sleep(0)
        started = time.monotonic()
        stuck = await cancel_all(tasks, within_s=2.0)
        return stuck, time.monotonic() - started, all(t.done() for t in tasks)

    stuck, took_s, done = asyncio.run(scenario())
    assert stuck == [] and done and took_s < 1.5


def test_a_task_that_never_stops_is_left_behind_after_the_bound_and_named() -> None:
    async def scenario() -> tuple[list[str], float]:
        release = asyncio.Event()
        task = asyncio.create_task(ignores_cancels(release), name="stubborn")
        await asyncio.sleep(0)
        started = time.monotonic()
        stuck = await cancel_all([task], within_s=0.5)
        took_s = time.monotonic() - started
        release.set()
        await task
        return stuck, took_s

    stuck, took_s = asyncio.run(scenario())
    assert stuck == ["stubborn"] and 0.5 <= took_s < 1.5
