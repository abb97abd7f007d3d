"""A task type's own payload end to end, real processes (README, "A payload of its own"): the
worker declares it, the ingest (which never imports handler code) checks orders by it through KV
ORDER_TYPES, the handler gets it as `job.payload`; and a schema change while an order is queued."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from harness import NatsServer, Service, cli, http, read_stream, run, statuses, wait_until

from orderflow import contract

pytestmark = pytest.mark.procs

TYPES = "default,invoice"
V1 = {"customer": "acme", "lines": [{"sku": "a-1", "qty": 2}]}


def post(ingest: Service, body: Any) -> tuple[int, Any]:
    status, _, answer = http("POST", ingest.url + "/orders?type=invoice", json.dumps(body).encode())
    return status, json.loads(answer)


def status_of(url: str, order_id: str) -> str | None:
    record = run(statuses(url)).get(order_id)
    return record.status if record else None


def test_a_declared_payload_is_checked_by_the_ingest_run_with_job_payload_and_survives_a_schema_change(
    nats_server: NatsServer, spawn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1. Worker v1 declares Invoice(customer, lines); the ingest, with no handler code, takes a
       v1 invoice (done: its handler got an Invoice) and answers 400 naming the bad fields of
       another; the seed's order still goes to `default`.
    2. v1 stops; an invoice is queued. Worker v2 starts: `po_number` is now required. The ingest
       follows at once (a v1 body answers 400 naming po_number); the queued order does not fit v2
       and is dead-lettered with the reason, never run.
    3. The fix (v3: po_number optional) is deployed; `orderflow dlq replay` runs the order: done."""
    url = nats_server.url

    def worker(version: str) -> Service:
        monkeypatch.setenv("INVOICE_SCHEMA", version)
        svc: Service = spawn("worker", HANDLERS="worker.demo,invoices", TASK_TYPES=TYPES, WORK_S="0.01")
        return svc.wait_ready()

    v1 = worker("v1")
    ingest = spawn("ingest", TASK_TYPES=TYPES).wait_ready()
    status, answer = post(ingest, V1)
    assert status == 200, answer
    done = answer["order_id"]
    wait_until(lambda: status_of(url, done) == "done", 20, "the invoice to be done")
    assert f"invoice {done} for acme: 1 lines" in v1.logs()
    assert post(ingest, {"customer": "acme", "lines": [{"sku": "a-1", "qty": 0}], "vat": 20}) == (
        400,
        {
            "result": "invalid",
            "errors": [
                {"field": "lines.0.qty", "message": "must be >= 1"},
                {"field": "vat", "message": "is not an allowed field"},
            ],
        },
    )
    seed = {"product_id": 1, "count": 1, "username": "m"}
    assert http("POST", ingest.url + "/orders", json.dumps(seed).encode())[0] == 200

    v1.signal(signal.SIGTERM)
    assert v1.wait(30) == 0
    status, answer = post(ingest, V1)
    assert status == 200
    queued = answer["order_id"]
    v2 = worker("v2")
    wait_until(lambda: status_of(url, queued) == "dead", 20, "the v1 invoice to be dead-lettered")
    assert post(ingest, V1) == (
        400, {"result": "invalid", "errors": [{"field": "po_number", "message": "is required"}]}
    )  # fmt: skip
    [dead] = [m for m in run(read_stream(url, contract.DLQ_STREAM)) if m.subject.endswith(queued)]
    assert "payload does not fit task type invoice's" in dead.headers[contract.H_ERROR]
    assert "po_number" in dead.headers[contract.H_ERROR]
    assert dead.headers[contract.H_ATTEMPTS] == "0"  # not an attempt: the handler never ran

    v2.signal(signal.SIGTERM)
    assert v2.wait(30) == 0
    v3 = worker("v3")
    out = cli(url, "dlq", "replay", queued)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: status_of(url, queued) == "done", 20, "the replayed invoice to be done")
    assert f"invoice {queued} for acme: 1 lines" in v3.logs()


def test_a_worker_runs_only_its_worker_types_and_needs_handlers_only_for_them(
    nats_server: NatsServer, spawn: Any
) -> None:
    """A worker of a Deployment of its own (the chart's worker.ownDeployments): ORDERFLOW_WORKER_TYPES
    =invoice with the whole ORDERFLOW_TASK_TYPES. It starts with handlers for invoice alone, takes
    the invoice from consumer workers-invoice, and leaves the default order queued for others."""
    url = nats_server.url
    worker = spawn("worker", HANDLERS="invoices", TASK_TYPES=TYPES, WORKER_TYPES="invoice").wait_ready()
    ingest = spawn("ingest", TASK_TYPES=TYPES).wait_ready()
    status, answer = post(ingest, V1)
    assert status == 200, answer
    wait_until(lambda: status_of(url, answer["order_id"]) == "done", 20, "the invoice to be done")
    seed = {"product_id": 1, "count": 1, "username": "m"}
    default = json.loads(http("POST", ingest.url + "/orders", json.dumps(seed).encode())[2])["order_id"]
    time.sleep(1.5)
    assert json.loads(ingest.get(f"/orders/{default}")[2])["status"] == "queued"
    assert worker.metric('orderflow_pool_slots{type="default"}') == 0
    assert worker.metric('orderflow_pool_slots{type="invoice"}') > 0
