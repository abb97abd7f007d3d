"""A test handler plugin (loaded with ORDERFLOW_HANDLERS=flaky): an order from user "fail-N" fails
its first N attempts (a retryable error), then succeeds; any other order succeeds at once. Each
run writes `start`, then `error` or `done`, to ORDER_RUNS, so tests see every attempt."""

from __future__ import annotations

from orderflow.config import Settings
from worker.handlers import Job, Registry


class Flaky(Exception):
    pass


def failures_wanted(username: str) -> int:
    prefix, _, count = username.partition("-")
    return int(count) if prefix == "fail" and count.isdigit() else 0


def register(registry: Registry, settings: Settings) -> None:
    async def flaky(job: Job) -> None:
        await job.record("start")
        if job.attempt <= failures_wanted(job.payload.username):
            await job.record("error")
            raise Flaky(f"attempt {job.attempt} fails on purpose")
        await job.record("done")

    for task_type in settings.task_types:
        registry.add(task_type.name, flaky)
