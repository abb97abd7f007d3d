"""Delayed orders with real processes (nats-server 2.12 message scheduling, the ingest, a worker,
the CLI): answered 200 at once, shown `scheduled` with its time while it waits, run within a
second of that time; one cancelled before its time is never run. The rules (bad values, the
fields taken out of the body) are proven in process: tests/ingest/test_delay_intake.py."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness import NatsServer, Service, cli, http, status_of, wait_until

pytestmark = pytest.mark.procs

ORDER = {"product_id": 1, "count": 2, "username": "later"}


def post(ingest: Service, **delay: Any) -> str:
    status, _, answer = http("POST", ingest.url + "/orders", json.dumps({**ORDER, **delay}).encode())
    assert status == 200, answer
    order_id: str = json.loads(answer)["order_id"]
    return order_id


@pytest.mark.timeout(90)
def test_a_delayed_order_waits_scheduled_runs_on_time_and_a_cancelled_one_never_runs(
    nats_server: NatsServer, spawn: Any
) -> None:
    ingest = spawn("ingest").wait_ready()
    spawn("worker", WORK_S=0.01).wait_ready()
    posted = time.time()
    order_id = post(ingest, delay_s=3)
    cancelled_id = post(ingest, delay_s=3)
    assert time.time() - posted < 2.0  # answered at once, not after the delay
    shown = ingest.order_view(order_id)
    assert shown["status"] == "scheduled", shown
    due = shown["run_at_s"]
    assert posted + 3 - 0.001 <= due <= time.time() + 3, shown  # to the millisecond
    assert status_of(nats_server.url, order_id) is None  # nothing run, nothing recorded yet

    done = cli(nats_server.url, "cancel", cancelled_id, "--timeout-s", "1")
    assert done.returncode == 0, done.stderr

    def final() -> Any:
        record = status_of(nats_server.url, order_id)
        return record if record is not None and record.status == "done" else None

    record = wait_until(final, 20, "the delayed order done")
    started = record.first_started_at or record.started_at
    assert started is not None and due <= started <= due + 1.0, (due, started)
    time.sleep(1.5)  # the cancelled one's schedule fired at the same time: give it the chance to run
    gone = status_of(nats_server.url, cancelled_id)
    assert gone is not None and gone.status == "cancelled" and gone.runs == 0, gone
    assert ingest.order_view(cancelled_id)["status"] == "cancelled"
