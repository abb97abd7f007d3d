"""Delayed orders at intake, in process (tests/ingest/memory_backend.py: the real app on a
stand-in store): `delay_s` / `not_before` taken out of the body and the order stored with its due
time, bad values refused with 400 naming the field, and the scheduled message it becomes (the
real-process run: tests/worker/test_delayed_orders.py)."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from memory_backend import InProcessIngest

from ingest import delay
from ingest.publisher import message_of
from orderflow import contract

ORDER = {"product_id": 1, "count": 2, "username": "later"}


def at(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat()


def test_delay_s_and_not_before_are_taken_out_and_the_order_stored_with_its_due_time() -> None:
    ingest = InProcessIngest()
    before = time.time()
    status, _, answer = ingest.post({**ORDER, "delay_s": 30})
    assert status == 200, answer
    order_id = answer["order_id"]
    _, order, _ = ingest.store.orders[order_id]
    assert isinstance(order, contract.Order) and order.username == "later"  # validated without it
    assert before + 30 <= ingest.store.scheduled[order_id] <= time.time() + 30
    due = time.time() + 120
    status, _, answer = ingest.post({**ORDER, "not_before": at(due)})
    assert status == 200 and ingest.store.scheduled[answer["order_id"]] == pytest.approx(due)
    # Due now, or a moment ago (within the tolerance): an ordinary order.
    for now in ({"delay_s": 0}, {"not_before": at(time.time() - 2)}):
        status, _, answer = ingest.post({**ORDER, **now})
        assert status == 200 and answer["order_id"] not in ingest.store.scheduled


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"delay_s": "10"}, "delay_s", "must be a number of seconds"),
        ({"delay_s": True}, "delay_s", "must be a number of seconds"),
        ({"delay_s": -1}, "delay_s", "must be >= 0"),
        ({"delay_s": 3601}, "delay_s", "must be <= 3600 (ORDERFLOW_MAX_DELAY_S)"),
        ({"not_before": "tomorrow"}, "not_before", "must be an RFC 3339 time with a zone"),
        ({"not_before": "2030-01-01T00:00:00"}, "not_before", "must be an RFC 3339 time with a zone"),
        ({"not_before": 1893456000}, "not_before", "must be an RFC 3339 time with a zone"),
        ({"not_before": "2020-01-01T00:00:00Z"}, "not_before", "is more than 5s in the past"),
        (
            {"delay_s": 1, "not_before": "2030-01-01T00:00:00Z"},
            "delay_s",
            "give not_before or delay_s, not both",
        ),
    ],
)
def test_a_bad_delay_is_400_naming_the_field(extra: dict[str, Any], field: str, message: str) -> None:
    ingest = InProcessIngest()
    status, _, answer = ingest.post({**ORDER, **extra})
    assert status == 400
    assert answer["errors"] == [{"field": field, "message": message}]
    assert not ingest.store.orders


def test_the_limit_is_orderflow_max_delay_s() -> None:
    ingest = InProcessIngest({"ORDERFLOW_MAX_DELAY_S": "60"})
    status, _, answer = ingest.post({**ORDER, "not_before": at(time.time() + 90)})
    assert status == 400
    assert answer["errors"] == [
        {"field": "not_before", "message": "is more than 60s ahead (ORDERFLOW_MAX_DELAY_S)"}
    ]
    assert ingest.post({**ORDER, "delay_s": 59})[0] == 200


def test_direct_mode_refuses_a_delayed_order() -> None:
    status, _, answer = InProcessIngest({"ORDERFLOW_MODE": "direct"}).post({**ORDER, "delay_s": 5})
    assert status == 400 and answer["errors"][0]["field"] == "delay_s"


def test_a_delayed_order_is_a_scheduled_message_targeting_its_retry_subject() -> None:
    """As worker/outcome.py's _reschedule: ORDERS sources orderflow.retry.> as orders.>. The
    Nats-Msg-Id stays the order id (a retried POST is a duplicate) and the worker reads the
    status first (a cancel made while it waited)."""
    order = contract.Order("abc", 1, 2, "later", 0.0)
    subject, _, headers = message_of(order, "default", False, "shop", run_at=1893456000.25)
    assert subject == "orderflow.schedule.default.abc"
    assert headers == {
        contract.H_MSG_ID: "abc",
        contract.H_STATUS_CHECK: "1",
        contract.H_CLIENT: "shop",
        contract.H_SCHEDULE: "@at 2030-01-01T00:00:00.250Z",
        contract.H_SCHEDULE_TARGET: "orderflow.retry.default.abc",
    }
    assert delay.rfc3339(1893456000.25) == "2030-01-01T00:00:00.250Z"


def test_a_batch_item_naming_a_delay_is_invalid_not_run_at_once() -> None:
    ingest = InProcessIngest()
    batch = {"orders": [{"order": {**ORDER, "delay_s": 5}}, {"order": ORDER}]}
    response = ingest.request("POST", "/orders/batch", json.dumps(batch).encode())
    assert response.status_code == 200, response.text
    first, second = response.json()["items"]
    assert first == {
        "result": "invalid",
        "errors": [
            {"field": "delay_s", "message": "not taken in a batch: POST /orders takes a delayed order"}
        ],
    }
    assert second["result"] == "created" and list(ingest.store.orders) == [second["order_id"]]
