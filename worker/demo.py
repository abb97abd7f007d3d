"""The demo order handler: the seed's "upload to S3" / long external call, simulated.

ORDERFLOW_WORK_S (fixed `0.5` or range `1-30`) and ORDERFLOW_WORK_FAIL_RATE shape it. It records a
run record on start and on completion, so tests and the chaos ledger can count real runs.

A job of a second or more checkpoints its simulated progress every 2 s, or every 10 % of its length
if that is shorter, and resumes from its checkpoint: a scale-down costs it at most one step. When
the worker starts to drain (`job.stopping`) and the rest of the job would not fit before its
hand-back (`job.deadline_s`), it checkpoints at once and hands itself back (`job.handback()`):
no cancel, nothing lost; the cancel at the deadline stays the backstop, and a run cut by it
checkpoints what it did since the last step while it unwinds. Shorter
jobs do not checkpoint: a checkpoint is a stored write, dearer than redoing under a second of work.
ORDERFLOW_WORK_CHECKPOINTS=false turns checkpoints off: every run starts over (the chaos
rehearsal's work-redone figure, both ways).

An order's length is drawn from its order id (uniform in ORDERFLOW_WORK_S), so every run of an order
is the same job, resumed or not, and two rehearsals with the same seed run the same job mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from orderflow.config import Settings, WorkRange
from worker.handlers import CheckpointError, Job, Registry

CHECKPOINT_MIN_LENGTH_S = 1.0
CHECKPOINT_EVERY_S = 2.0


class SimulatedFailure(Exception):
    """A retryable failure injected by ORDERFLOW_WORK_FAIL_RATE."""


def register(registry: Registry, settings: Settings) -> None:
    work = settings.work_s
    fail_rate = settings.work_fail_rate
    checkpoints = settings.work_checkpoints

    async def demo(job: Job) -> None:
        resume: dict[str, Any] = job.resume_from if isinstance(job.resume_from, dict) else {}
        length = float(resume.get("length_s") or _length(job.order.order_id, work))
        done = float(resume.get("done_s") or 0.0)
        await job.record_progress("start", done, length)
        step = min(CHECKPOINT_EVERY_S, length / 10) if length >= CHECKPOINT_MIN_LENGTH_S else length
        keep = checkpoints and length >= CHECKPOINT_MIN_LENGTH_S
        since = time.monotonic()
        try:
            while done < length:
                chunk = min(step, length - done)
                since = time.monotonic()
                await _work(job, chunk)
                done = min(length, done + min(chunk, time.monotonic() - since))
                if done < length and job.stopping.is_set() and length - done > job.deadline_s:
                    # Draining, and the rest would not fit before the hand-back: keep what is done
                    # and give the order back now rather than be cancelled at the deadline.
                    if keep:
                        await _checkpoint(job, length, done)
                    with contextlib.suppress(Exception):
                        await job.record_progress("interrupted", done, length)
                    job.handback()
                    return
                if done < length and keep:
                    await _checkpoint(job, length, done)
        except asyncio.CancelledError:
            # Handed back at the deadline (or cancelled): keep the part of the step already done.
            partial = min(length, done + (time.monotonic() - since))
            if keep:
                await _checkpoint(job, length, partial)
            # Only a record: a NATS outage must not turn the hand-back into a failed attempt.
            with contextlib.suppress(Exception):
                await job.record_progress("interrupted", partial, length)
            raise
        if fail_rate and random.random() < fail_rate:
            await job.record_progress("error", done, length)
            raise SimulatedFailure(f"simulated failure (ORDERFLOW_WORK_FAIL_RATE={fail_rate:g})")
        await job.record_progress("done", done, length)

    registry.fallback(demo)


async def _work(job: Job, seconds: float) -> None:
    """`seconds` of simulated work, cut short when the worker starts to drain (once: a drain's
    step then runs whole, the handler looks again after it)."""
    if job.stopping.is_set():
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(job.stopping.wait(), seconds)


def _length(order_id: str, work: WorkRange) -> float:
    if work.min_s == work.max_s:
        return work.min_s
    return random.Random(order_id).uniform(work.min_s, work.max_s)  # str seeds: stable across processes


async def _checkpoint(job: Job, length: float, done: float) -> None:
    try:
        await job.checkpoint({"length_s": length, "done_s": round(done, 3)})
    except CheckpointError:  # NATS away for a moment: the next step tries again
        pass
