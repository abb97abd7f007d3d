"""A test handler plugin (ORDERFLOW_HANDLERS=billing) for every configured task type: while the file
named by BILLING_BROKEN_FILE exists, every run fails with "billing BROKEN for <id>" (a retryable
error, so the order is dead-lettered after its attempts), and an order from user "poison" is called
poison (PoisonError: dead-lettered at once, reason poison); once the file is gone, runs succeed.
An order from user "long" is a long job: LONG_S of work, a checkpoint every STEP_S (its progress,
resumed from on a next run). Every run is recorded in ORDER_RUNS, like the demo's."""

from __future__ import annotations

import asyncio
import os

from orderflow.config import Settings
from worker.handlers import Job, PoisonError, Registry

LONG_S = 4.0
STEP_S = 0.5


class BillingBroken(Exception):
    pass


async def _long(job: Job) -> None:
    state = job.resume_from if isinstance(job.resume_from, dict) else {}
    done = float(state.get("done_s") or 0.0)
    while done < LONG_S:
        await asyncio.sleep(STEP_S)
        done += STEP_S
        await job.checkpoint({"done_s": done, "length_s": LONG_S})


def register(registry: Registry, settings: Settings) -> None:
    broken = os.environ["BILLING_BROKEN_FILE"]

    async def billing(job: Job) -> None:
        await job.record("start")
        if await asyncio.to_thread(os.path.exists, broken):
            await job.record("error")
            if job.payload.username == "poison":
                raise PoisonError(f"billing cannot read {job.order.order_id}")
            raise BillingBroken(f"billing BROKEN for {job.order.order_id}")
        if job.payload.username == "long":
            await _long(job)
        await job.record("done")

    registry.fallback(billing)
