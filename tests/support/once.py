"""A test handler plugin (ORDERFLOW_HANDLERS=once): every run of a handler appends the order id to
the file named by ONCE_LEDGER (O_APPEND: one line per run, whole, from any number of workers), so a
test counts how often each order really ran without writing to JetStream, whose store the test may
be filling on purpose."""

from __future__ import annotations

import os

from orderflow.config import Settings
from worker.handlers import Job, Registry


def register(registry: Registry, settings: Settings) -> None:
    ledger = os.open(os.environ["ONCE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def once(job: Job) -> None:
        os.write(ledger, f"{job.order.order_id}\n".encode())

    for task_type in settings.task_types:
        registry.add(task_type.name, once)
