"""A task type's own payload on the worker's side (worker/payload.py, worker/handlers.py), in
process: what a registration accepts, what the handler gets as `job.payload`, and what becomes of
an order stored under another payload (a schema changed while it was queued): dead-lettered with
the reason, never run, never retried."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import msgspec
import pytest
from standin import FakeMsg
from test_pipeline import Rig

from orderflow import contract
from worker.handlers import Job, Registry
from worker.payload import SEED, codec_of


class Line(msgspec.Struct):
    sku: Annotated[str, msgspec.Meta(min_length=1)]
    qty: Annotated[int, msgspec.Meta(ge=1)]


class Invoice(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    lines: list[Line]


SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "properties": {"url": {"type": "string", "pattern": "^https://"}, "width": {"type": "integer"}},
}


def typed(order_id: str, payload: Any) -> bytes:
    return contract.encode(contract.TypedOrder(order_id, msgspec.Raw(contract.encode(payload)), time.time()))


async def noop(job: Job) -> None:
    return None


def test_a_registration_declares_a_struct_or_a_json_schema_and_no_payload_keeps_the_seed_order() -> None:
    registry = Registry()
    registry.add("invoice", noop, payload=Invoice)
    registry.add("thumbnail", noop, payload=SCHEMA)
    registry.add("legacy", noop)
    assert registry.payload("legacy") is SEED and SEED.schema is None
    assert registry.payload("thumbnail").schema == SCHEMA
    # what the workers publish for the ingest is msgspec's own JSON Schema of the Struct
    assert registry.payload("invoice").schema == msgspec.json.schema(Invoice)
    registry.fallback(noop)
    assert registry.payload("anything-else") is SEED  # the catch-all's types take the seed's order


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"type": "objekt"}, "not a valid JSON Schema"),
        ([1, 2], "a msgspec.Struct class or a JSON Schema"),
        (msgspec.defstruct("Pair", [("a", int)], array_like=True), "array_like"),
    ],
)
def test_a_payload_that_cannot_be_checked_fails_at_registration(payload: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Registry().add("bad", noop, payload=payload)


def run_one(codec_payload: Any, data: bytes, task_type: str = "default") -> tuple[Rig, list[Job]]:
    seen: list[Job] = []

    async def handler(job: Job) -> None:
        seen.append(job)

    async def main() -> Rig:
        rig = Rig(handler, codec=codec_of(task_type, codec_payload))
        rig.pool.start(FakeMsg("o-1", data=data))
        await rig.until_idle()
        return rig

    return asyncio.run(main()), seen


def test_the_handler_gets_its_struct_as_job_payload() -> None:
    rig, [job] = run_one(Invoice, typed("o-1", {"customer": "acme", "lines": [{"sku": "a", "qty": 2}]}))
    assert job.payload == Invoice("acme", [Line("a", 2)])
    assert job.order_id == "o-1" and isinstance(job.order, contract.TypedOrder)
    assert rig.t.ops() == ["put:done", "ack"]


def test_a_json_schema_payload_is_the_object_extra_fields_and_all() -> None:
    _, [job] = run_one(SCHEMA, typed("o-1", {"url": "https://x/y.png", "width": 64, "note": "kept"}))
    assert job.payload == {"url": "https://x/y.png", "width": 64, "note": "kept"}


def test_the_seed_payload_is_the_order_itself() -> None:
    _, [job] = run_one(None, contract.encode(contract.Order("o-1", 3, 4, "m", 1.0)))
    order = job.payload
    assert (
        order is job.order and isinstance(order, contract.Order) and (order.product_id, order.count) == (3, 4)
    )


@pytest.mark.parametrize(
    ("declared", "stored", "reason"),
    [
        # queued as the seed's order, then the type declared an Invoice
        (Invoice, contract.encode(contract.Order("o-1", 1, 2, "m", 1.0)), "payload"),
        # queued under an older Invoice (no lines), then `lines` became required
        (Invoice, typed("o-1", {"customer": "acme"}), "lines"),
        # a JSON Schema that now wants https
        (SCHEMA, typed("o-1", {"url": "http://x"}), "url must match the pattern"),
        # queued with a declared payload, then the type went back to the seed's order
        (None, typed("o-1", {"customer": "acme"}), "product_id"),
    ],
    # named ids: the stored bytes carry a creation time, and xdist's workers must collect the same names
    ids=["seed-order-then-invoice", "older-invoice-then-lines", "schema-now-https", "declared-then-seed"],
)
def test_an_order_queued_under_another_payload_is_dead_lettered_with_the_reason(
    declared: Any, stored: bytes, reason: str
) -> None:
    rig, seen = run_one(declared, stored)
    assert seen == []  # never run
    assert rig.t.ops() == ["publish", "put:dead", "term"]
    subject, data, headers = rig.t.published[0]
    assert subject == "dlq.orders.default.o-1" and data == stored  # replayable as it was stored
    assert headers[contract.H_REASON] == "payload"
    assert "payload does not fit task type default's" in headers[contract.H_ERROR]
    assert reason in headers[contract.H_ERROR]
    assert rig.t.records["o-1"].status == "dead" and rig.t.records["o-1"].attempts == 0


def test_data_with_no_order_id_stays_undecodable_as_before() -> None:
    rig, seen = run_one(Invoice, b"\x00not an order")
    assert seen == [] and rig.t.ops() == ["publish", "put:failed", "term"]
    assert rig.t.published[0][2][contract.H_REASON] == "undecodable"
