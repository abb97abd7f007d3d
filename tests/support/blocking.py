"""A test handler plugin (loaded with ORDERFLOW_HANDLERS=blocking): an order from user "block-S"
blocks the worker's event loop for S seconds (a sync `time.sleep`, the mistake of calling a
blocking client from a handler); any other order sleeps WORK_S the proper way. Each run writes
`start` (just before it blocks) and `done` to ORDER_RUNS."""

from __future__ import annotations

import asyncio
import time

from orderflow.config import Settings
from worker.handlers import Job, Registry


def block_s(username: str) -> float:
    prefix, _, seconds = username.partition("-")
    try:
        return float(seconds) if prefix == "block" else 0.0
    except ValueError:
        return 0.0


def register(registry: Registry, settings: Settings) -> None:
    async def blocking(job: Job) -> None:
        await job.record("start")
        seconds = block_s(job.payload.username)
        if seconds:
            time.sleep(seconds)  # noqa: ASYNC251  (on purpose: no heartbeat, no timer, no callback)
        else:
            await asyncio.sleep(settings.work_s.min_s)
        await job.record("done")

    for task_type in settings.task_types:
        registry.add(task_type.name, blocking)
