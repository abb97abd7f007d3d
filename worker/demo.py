"""The demo order handler: the seed's "upload to S3" / long external call, simulated.

ORDERFLOW_WORK_S (fixed `0.5` or range `1-30`) and ORDERFLOW_WORK_FAIL_RATE shape it. It records a
run record on start and on completion, so tests and the chaos ledger can count real runs.
"""

from __future__ import annotations

import asyncio
import random

from orderflow.config import Settings
from worker.handlers import Job, Registry


class SimulatedFailure(Exception):
    """A retryable failure injected by ORDERFLOW_WORK_FAIL_RATE."""


def register(registry: Registry, settings: Settings) -> None:
    work = settings.work_s
    fail_rate = settings.work_fail_rate

    async def demo(job: Job) -> None:
        await job.record("start")
        duration = random.uniform(work.min_s, work.max_s)
        if duration > 0:
            await asyncio.sleep(duration)
        if fail_rate and random.random() < fail_rate:
            await job.record("error")
            raise SimulatedFailure(f"simulated failure (ORDERFLOW_WORK_FAIL_RATE={fail_rate:g})")
        await job.record("done")

    for task_type in settings.task_types:
        if task_type.name not in registry:
            registry.add(task_type.name, demo)
