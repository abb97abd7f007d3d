"""A test handler plugin (ORDERFLOW_HANDLERS=worker.demo,invoices) whose task type `invoice`
declares a payload of its own, in the version INVOICE_SCHEMA names (a test's stand-in for a new
image of the handler): v1 an Invoice of a customer and lines, v2 with a required `po_number`, v3
with `po_number` optional again (the fix). Each run records `done` only when the handler got an
Invoice (else it is poison), and logs what it got."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import msgspec

from orderflow.config import Settings
from worker.handlers import Job, PoisonError, Registry

log = logging.getLogger(__name__)


class Line(msgspec.Struct):
    sku: Annotated[str, msgspec.Meta(min_length=1)]
    qty: Annotated[int, msgspec.Meta(ge=1)]


class InvoiceV1(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    lines: list[Line]


class InvoiceV2(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    lines: list[Line]
    po_number: str


class InvoiceV3(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    lines: list[Line]
    po_number: str = ""


VERSIONS: dict[str, type[InvoiceV1 | InvoiceV2 | InvoiceV3]] = {
    "v1": InvoiceV1,
    "v2": InvoiceV2,
    "v3": InvoiceV3,
}


def register(registry: Registry, settings: Settings) -> None:
    invoice = VERSIONS[os.environ.get("INVOICE_SCHEMA", "v1")]

    async def send_invoice(job: Job) -> None:
        if not isinstance(job.payload, invoice):
            raise PoisonError(f"not an invoice: {job.payload!r}")
        log.info("invoice %s for %s: %d lines", job.order_id, job.payload.customer, len(job.payload.lines))
        await job.record("done")

    registry.add("invoice", send_invoice, payload=invoice)
