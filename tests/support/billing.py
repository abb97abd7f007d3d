"""A test handler plugin (ORDERFLOW_HANDLERS=billing) for every configured task type: while the file
named by BILLING_BROKEN_FILE exists, every run fails with "billing BROKEN for <id>" (a retryable
error, so the order is dead-lettered after its attempts), and an order from user "poison" is called
poison (PoisonError: dead-lettered at once, reason poison); once the file is gone, runs succeed.
Every run is recorded in ORDER_RUNS, like the demo's."""

from __future__ import annotations

import asyncio
import os

from orderflow.config import Settings
from worker.handlers import Job, PoisonError, Registry


class BillingBroken(Exception):
    pass


def register(registry: Registry, settings: Settings) -> None:
    broken = os.environ["BILLING_BROKEN_FILE"]

    async def billing(job: Job) -> None:
        await job.record("start")
        if await asyncio.to_thread(os.path.exists, broken):
            await job.record("error")
            if job.payload.username == "poison":
                raise PoisonError(f"billing cannot read {job.order.order_id}")
            raise BillingBroken(f"billing BROKEN for {job.order.order_id}")
        await job.record("done")

    registry.fallback(billing)
