"""A test handler plugin (loaded with ORDERFLOW_HANDLERS=crashy): orders from user "crash-once"
escape the handler contract on their first attempt with a BaseException, which no `except
Exception` catches — the slot running them crashes. Everything else behaves like the demo."""

from __future__ import annotations

import asyncio

from orderflow.config import Settings
from worker.handlers import Job, Registry


class SlotCrash(BaseException):
    pass


def register(registry: Registry, settings: Settings) -> None:
    async def crashy(job: Job) -> None:
        await job.record("start")
        if job.payload.username == "crash-once" and job.attempt == 1:
            raise SlotCrash("boom")
        await asyncio.sleep(settings.work_s.min_s)
        await job.record("done")

    for task_type in settings.task_types:
        registry.add(task_type.name, crashy)
