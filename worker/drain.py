"""The worker's drain on SIGTERM: an ordered sequence of numbered phases, each with its deadline
(uvicorn's shutdown(), dramatiq's Worker.stop: stop fetching before the jobs, let them finish with
their heartbeats flowing, hand back what still runs), and every task the worker started outside a
job (`Started`), which the drain ends and waits for before the connection goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec

from orderflow.lifecycle import wait_any
from worker import drainreport
from worker.delivery import Kind

if TYPE_CHECKING:
    from worker.service import WorkerService

log = logging.getLogger(__name__)


class Started:
    """The tasks a worker starts outside its jobs: the background loops (tickers, samplers,
    watchers), the fetch loops and a recovery's re-leases."""

    def __init__(self) -> None:
        self.background: list[asyncio.Task[None]] = []
        self.fetchers: list[asyncio.Task[None]] = []
        self.recovering: asyncio.Task[None] | None = None

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        async def body() -> None:
            await factory()

        self.background.append(asyncio.create_task(body(), name=name))

    async def cancel(self, within_s: float) -> list[str]:
        """Every one of them cancelled and waited for; the names of those still running after
        `within_s`."""
        recovering = [self.recovering] if self.recovering is not None else []
        return await cancel_all([*self.background, *self.fetchers, *recovering], within_s)


async def drain(w: WorkerService) -> None:
    """From SIGTERM to a drained connection, in order; returns when the worker may exit."""
    t = w.timing
    started = time.monotonic()
    pools = [r.pool for r in w.runners]
    running_at_start = sum(len(p.running) for p in pools)
    w.draining = True
    w.metrics.draining.set(1)
    # Phase 0: the deadline. The pod's own deletion (read within a second) says when the
    # SIGKILL comes; leaving the ranks runs meanwhile (both are bounded by about a second).
    reading = asyncio.create_task(w.deadlines.deadline(t, started))
    if w.ranks is not None and w.nc is not None:
        await w.ranks.leave(w.nc.jetstream())
    clock, why = await reading
    deadline = started + clock.drain_s
    hand_back_at = started + clock.hand_back_s
    w.metrics.drain_deadline.labels(clock.ruled_by).set(clock.drain_s)
    w.stopping.set(hand_back_at)  # job.stopping, job.deadline_s
    for r in w.runners:  # the hand-back notice, on each running job's span
        r.hooks.draining(hand_back_at - time.monotonic())
    report = drainreport.DrainReport(
        event="draining",
        worker_id=w.settings.worker_id,
        running_at_sigterm=running_at_start,
        deadline_s=round(clock.drain_s, 3),
        ruled_by=clock.ruled_by,
        why=why,
    )
    report_path = drainreport.path_of(w.settings)
    drainreport.write(report_path, report)
    log.info(
        "draining: %d jobs running, deadline %.1fs by the %s (%s; budget %.0fs)",
        running_at_start,
        clock.drain_s,
        clock.ruled_by,
        why,
        t.drain_timeout_s,
    )

    # Phase 1: stop fetching at once. A pull request already out ends within fetch_expiry_s;
    # what it still brings is given back unstarted. In the background: with a short grace the
    # hand-back may be due before the open requests have ended.
    w.stop_fetching.set()
    closing = asyncio.create_task(_close_fetching(w, hand_back_at))

    # Phase 2: let running jobs finish; heartbeats keep flowing. Ends early on a second signal.
    idle = asyncio.gather(*(p.wait_idle() for p in pools), return_exceptions=True)
    await wait_any(idle, w.lifecycle.force.wait(), timeout_s=max(0.0, hand_back_at - time.monotonic()))

    # Phase 3: hand back what still runs, so another worker starts it now, not after ack_wait.
    # Each handler is cancelled and gets unwind_s to checkpoint while it unwinds.
    stopping = [slot for p in pools for slot in p]
    for p in pools:
        for slot in p:
            p.stop(slot, Kind.HANDED_BACK, unwind_s=clock.unwind_s)
    tasks = [slot.task for slot in stopping if slot.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
    unstarted = await closing
    # The settles no job's task carries (a crashed slot's, each unstarted delivery's give-back),
    # and an adopted delivery's in_progress: their acks and naks go out before the connection.
    side = [task for r in w.runners for task in r.pipeline.side_tasks]
    if side:
        await asyncio.wait(side, timeout=max(1.0, deadline - time.monotonic()))

    # Phase 4: every task the worker started off (tickers, watchers, fetch loops, a recovery's
    # re-leases), then the request mux (every status write is answered or given up by now),
    # then drain the connection (flushes acks and naks).
    stuck = await w.started.cancel(w.timing.cancel_within_s)
    if stuck:
        log.warning("drain: %s did not stop when cancelled; left behind", ", ".join(sorted(stuck)))
    if w.requests is not None:
        await w.requests.stop()
    if w.keeper is not None:
        w.keeper.update(0)
    if w.nc is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(w.nc.drain(), timeout=t.nats_drain_timeout_s)
    w.metrics.draining.set(0)
    report = msgspec.structs.replace(
        report,
        event="drained",
        drained_in_s=round(time.monotonic() - started, 3),
        handed_back_at_deadline=len(stopping),
        unstarted=unstarted,
        handed_back_by_handlers=sum(r.pipeline.handed_back_by_handlers for r in w.runners),
    )
    drainreport.write(report_path, report)
    log.info(
        "drained in %.1fs: %d running at SIGTERM, %d handed back at the deadline, %d fetched but "
        "never started, %d handed back by their handlers; deadline %.1fs by the %s",
        report.drained_in_s,
        running_at_start,
        report.handed_back_at_deadline,
        unstarted,
        report.handed_back_by_handlers,
        clock.drain_s,
        clock.ruled_by,
    )


async def _close_fetching(w: WorkerService, hand_back_at: float) -> int:
    """Phase 1: the fetch loops end (bounded by the hand-back too), then their open requests are
    waited out and what they bring is given back; returns how many deliveries that was."""
    fetchers = w.started.fetchers
    if fetchers:
        within_s = min(w.timing.fetch_expiry_s + 2.0, max(0.0, hand_back_at - time.monotonic()))
        await asyncio.wait(fetchers, timeout=within_s)
    for task in fetchers:
        task.cancel()
    await asyncio.gather(*(r.loop.close() for r in w.runners), return_exceptions=True)
    return sum(r.loop.unstarted for r in w.runners)


async def cancel_all(tasks: Sequence[asyncio.Task[None]], within_s: float) -> list[str]:
    """Cancel `tasks` and wait until they are done, cancelling again any that carries on: Python
    3.11's asyncio.wait_for returns a result that arrives together with the cancel and drops the
    cancel (gh-86296), and nats-py's request waits with it, so a loop that was in a request (the
    consumer-info sampler) went on forever and the drain never ended (the long-job chaos
    rehearsal's kubelet SIGKILLed such pods at the end of their grace). Returns the names of the
    tasks still running after `within_s`."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + within_s
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    return [t.get_name() for t in pending]
