"""The `invoice` task type: `ORDERFLOW_HANDLERS=acme_invoices.handlers`, `ORDERFLOW_TASK_TYPES=...,invoice`,
with a payload of its own (not the seed's order), declared when it registers: the workers publish
its JSON Schema and the ingest checks invoices by it without this package in its image.

It logs one line naming itself, the order, the worker and the decoded payload, so a test tells its
runs from the demo handler's (which serves every type no module registers)."""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec

from orderflow.config import Settings
from worker.handlers import Job, Registry

log = logging.getLogger(__name__)


class Invoice(msgspec.Struct, forbid_unknown_fields=True):
    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    amount_cents: Annotated[int, msgspec.Meta(ge=1)]


async def send_invoice(job: Job) -> None:
    invoice: Invoice = job.payload  # decoded by the worker with the declared Struct
    await job.record("start")
    log.info(
        "acme_invoices: invoice for order %s sent by %s: %s %d cents",
        job.order_id,
        job.worker_id,
        invoice.customer,
        invoice.amount_cents,
    )
    await job.record("done")


def register(registry: Registry, settings: Settings) -> None:
    registry.add("invoice", send_invoice, payload=Invoice)
