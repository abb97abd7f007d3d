"""orderflow/lookup.py: where an order stands (status record, else its message, else a second look)
and how a record is shown (ISO 8601 UTC beside every numeric timestamp)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
from nats.aio.msg import Msg

from orderflow import contract, lookup
from orderflow.natsmux import Requester


class StandInRequests:
    """A stand-in for natsmux.Requester (named as such): answers from the lists it is given, in
    order, one per call, and records what was asked."""

    def __init__(self, records: list[bytes | None], messages: list[Msg | None]) -> None:
        self.records = records
        self.messages = messages
        self.asked: list[str] = []

    async def direct_get(self, stream: str, subject: str, timeout_s: float | None = None) -> bytes | None:
        self.asked.append(f"{stream} {subject}")
        return self.records.pop(0)

    async def direct_get_last(self, stream: str, subjects: str, timeout_s: float | None = None) -> Msg | None:
        self.asked.append(f"{stream} {subjects}")
        return self.messages.pop(0)


def find(requests: StandInRequests, order_id: str) -> dict[str, Any] | None:
    stand_in: Any = requests
    source: Requester = stand_in
    return asyncio.run(lookup.OrderLookup(source).find(order_id))


def message(subject: str, data: dict[str, Any], **headers: str) -> Msg:
    return Msg(
        None,  # type: ignore[arg-type]
        subject="_INBOX.x",
        data=json.dumps(data).encode(),
        headers={"Nats-Subject": subject, **headers},
    )


def test_the_status_record_comes_first_and_the_stream_is_not_asked() -> None:
    requests = StandInRequests([b'{"order_id":"a","status":"done","attempts":0}'], [])
    assert find(requests, "a") == {"order_id": "a", "status": "done", "attempts": 0}
    assert requests.asked == ["KV_ORDER_STATUS $KV.ORDER_STATUS.a"]


def test_without_a_record_the_message_in_orders_means_queued() -> None:
    msg = message(
        "orders.invoice.a", {"order_id": "a", "product_id": 1, "count": 1, "username": "m", "created_at": 5.0}
    )
    requests = StandInRequests([None], [msg])
    assert find(requests, "a") == {
        "order_id": "a",
        "status": "queued",
        "attempts": 0,
        "task_type": "invoice",
        "updated_at": 5.0,
        "created_at": 5.0,
    }
    assert requests.asked[1] == "ORDERS orders.*.a"


def test_a_record_written_between_the_two_reads_is_found_by_a_second_look() -> None:
    """The worker stores `done` before it acks (removes) the message: record absent, then the
    message gone, then the record there."""
    requests = StandInRequests([None, b'{"order_id":"a","status":"done"}'], [None, None])
    assert find(requests, "a") == {"order_id": "a", "status": "done"}
    assert find(StandInRequests([None, None], [None, None]), "a") is None


def test_a_delayed_orders_schedule_means_scheduled_with_its_time() -> None:
    """Neither a record nor a message in ORDERS: its schedule in ORDER_RETRIES (ingest/delay.py).
    A retry's schedule (its own Nats-Msg-Id) is not taken for one."""
    order = {"order_id": "a", "product_id": 1, "count": 1, "username": "m", "created_at": 5.0}
    schedule = message(
        "orderflow.schedule.invoice.a",
        order,
        **{
            contract.H_MSG_ID: "a",
            contract.H_SCHEDULE: "@at 2030-01-01T00:00:00.250Z",
            contract.H_CLIENT: "shop",
        },
    )
    requests = StandInRequests([None], [None, schedule])
    assert find(requests, "a") == {
        "order_id": "a",
        "status": "scheduled",
        "attempts": 0,
        "task_type": "invoice",
        "client": "shop",
        "updated_at": 5.0,
        "created_at": 5.0,
        "run_at": 1893456000.25,
    }
    assert requests.asked[2] == "ORDER_RETRIES orderflow.schedule.*.a"
    retry = message("orderflow.schedule.invoice.a", order, **{contract.H_MSG_ID: "a.retry.1"})
    assert find(StandInRequests([None, None], [None, retry]), "a") is None


def test_render_shows_every_field_and_every_timestamp_as_iso_utc_beside_its_number() -> None:
    shown = lookup.render(
        {
            "order_id": "a",
            "status": "done",
            "updated_at": 0.5,
            "lease_until": 60,
            "finished_at": None,
            "n_at": True,
        }
    )
    assert shown == {
        "order_id": "a",
        "status": "done",
        "updated_at": "1970-01-01T00:00:00.500Z",
        "updated_at_s": 0.5,
        "lease_until": "1970-01-01T00:01:00.000Z",
        "lease_until_s": 60,
        "finished_at": None,
        "n_at": True,
        # the counts, even where the stored record leaves its zeros out
        "attempts": 0,
        "failed_attempts": 0,
        "runs": 0,
        "deliveries": 0,
        "handbacks": 0,
        "crashes": 0,
    }


def test_the_view_names_failed_attempts_runs_first_and_last_start_and_total_run_time() -> None:
    """`attempts` counts failed runs only, `started_at` is the last run's, `run_s` all runs' time:
    the view names them so (failed_attempts, last_started_at, total_run_s) and keeps the old names
    beside them for the readers of those."""
    record = {"order_id": "a", "status": "done", "attempts": 1, "runs": 3, "first_started_at": 1.0,
              "started_at": 5.0, "run_s": 2.5}  # fmt: skip
    shown = lookup.render(record, full=False)
    assert (shown["failed_attempts"], shown["attempts"], shown["runs"]) == (1, 1, 3)
    assert shown["first_started_at"] == "1970-01-01T00:00:01.000Z" and shown["first_started_at_s"] == 1.0
    assert shown["last_started_at"] == shown["started_at"] == "1970-01-01T00:00:05.000Z"
    assert shown["total_run_s"] == 2.5 and "run_s" not in shown  # run_s stays admin-only
    assert lookup.render(record)["run_s"] == 2.5


def test_a_queued_order_names_the_key_that_created_it() -> None:
    msg = message("orders.default.a", {"order_id": "a"}, **{contract.H_CLIENT: "shop"})
    assert find(StandInRequests([None], [msg]), "a") == {
        "order_id": "a",
        "status": "queued",
        "attempts": 0,
        "task_type": "default",
        "client": "shop",
    }


def test_a_client_sees_an_allow_list_of_its_record_and_admin_all_of_it() -> None:
    """Status, times, counts, a result and the error's class: not the worker, the lease, the
    checkpoint, the error's text, whose key it is, nor any field the record gains later."""
    record = lookup.decode_record(  # as the lookup reads it from KV
        contract.encode(
            contract.StatusRecord(
                "a",
                "dead",
                5,
                10.0,
                worker_id="pod-7",
                task_type="default",
                started_at=8.0,
                finished_at=10.0,
                error="KeyError: 'card 4111 1111 1111 1111'",
                deliveries=6,
                lease_until=12.0,
                checkpoint=msgspec.Raw(b'{"cursor":3}'),
                checkpoint_at=9.0,
                run_s=2.0,
                client="shop",
                error_class="handler_error",
            )
        )
    )
    raw = {**record, "added_later": "x"}
    assert lookup.render(raw, full=False) == {
        "order_id": "a",
        "status": "dead",
        "task_type": "default",
        "attempts": 5,
        "failed_attempts": 5,
        "runs": 0,
        "deliveries": 6,
        "handbacks": 0,
        "crashes": 0,
        "updated_at": "1970-01-01T00:00:10.000Z",
        "updated_at_s": 10.0,
        "started_at": "1970-01-01T00:00:08.000Z",
        "started_at_s": 8.0,
        "last_started_at": "1970-01-01T00:00:08.000Z",
        "last_started_at_s": 8.0,
        "total_run_s": 2.0,
        "finished_at": "1970-01-01T00:00:10.000Z",
        "finished_at_s": 10.0,
        "error_class": "handler_error",
    }
    full = lookup.render(raw)
    assert {"worker_id", "error", "checkpoint", "lease_until", "client", "run_s", "added_later"} <= set(full)
