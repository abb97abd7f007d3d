"""The `invoice` task type: `ORDERFLOW_HANDLERS=acme_invoices.handlers`, `ORDERFLOW_TASK_TYPES=...,invoice`.

It logs one line naming itself, the order and the worker, so a test tells its runs from the demo
handler's (which serves every type no module registers)."""

from __future__ import annotations

import logging

from orderflow.config import Settings
from worker.handlers import Job, Registry

log = logging.getLogger(__name__)


async def send_invoice(job: Job) -> None:
    await job.record("start")
    log.info("acme_invoices: invoice for order %s sent by %s", job.order.order_id, job.worker_id)
    await job.record("done")


def register(registry: Registry, settings: Settings) -> None:
    registry.add("invoice", send_invoice)
