"""Long retry delays leave the consumer (issue #14, item 4): a retry that waits longer than
3 x ack_wait is a scheduled message in ORDER_RETRIES (`Nats-Schedule: @at ...`), the delivery it
replaces is acked, and the fired copy comes back into ORDERS as `orders.<type>.<id>` with the
order's counts. Exactly-once in effect, GET /orders/{id}, cancel and the DLQ rule hold for it.
Real nats-server (2.15: message schedules), real ingest and worker processes, the real CLI.

The delays: ack_wait 2 s, so a retry is rescheduled when its delay passes 3 x 2 = 6 s. With
RETRY_BASE_S=6 the n-th retry waits 6 x 2^(n-1) x [0.5, 1) s: the first [3, 6] s (a plain
`nak(delay)`), the second [6, 12) s (a scheduled message; `@at` has whole seconds, so it may fire
up to 1 s early: at least 5 s of waiting to look at)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from harness import (
    NatsServer,
    cli,
    consumer_info,
    publish_orders,
    read_stream,
    records_of,
    run,
    status_of,
    wait_until,
)
from order_waits import assert_consumer_idle, the_dead_letter, wait_status

from orderflow import contract

pytestmark = pytest.mark.slow

SETTINGS = {"HANDLERS": "flaky", "ACK_WAIT_S": 2, "RETRY_BASE_S": 6, "MAX_DELIVER": 3}


def wait_scheduled(url: str, order_id: str, timeout: float = 20) -> contract.StatusRecord:
    """The order's status once its retry waits as a scheduled message."""

    def scheduled() -> contract.StatusRecord | None:
        st = status_of(url, order_id)
        return st if st is not None and st.status == "queued" and st.scheduled else None

    found = wait_until(scheduled, timeout, f"{order_id}'s retry to be scheduled", 0.05)
    assert found is not None
    return found


def retries_of(url: str, order_id: str, prefix: str) -> list[Any]:
    """The order's messages in ORDER_RETRIES under `prefix`: schedules (SCHEDULE_PREFIX) wait to
    fire; fired copies (RETRY_PREFIX) stay there, sourced into ORDERS, until the stream's max age."""
    subject = f"{prefix}default.{order_id}"
    return [m for m in run(read_stream(url, contract.RETRIES_STREAM)) if m.subject == subject]


def schedule_of(url: str, order_id: str) -> Any:
    """The order's scheduled retry (exactly one)."""
    [schedule] = retries_of(url, order_id, contract.SCHEDULE_PREFIX)
    return schedule


def assert_fired(url: str, order_id: str, times: int) -> None:
    """No schedule of the order is left; `times` of them fired."""
    assert retries_of(url, order_id, contract.SCHEDULE_PREFIX) == []
    assert len(retries_of(url, order_id, contract.RETRY_PREFIX)) == times


def fires_at(schedule: Any) -> float:
    """When the server fires a schedule: its `@at <RFC 3339>` header."""
    spec = schedule.headers[contract.H_SCHEDULE]
    assert spec.startswith("@at "), spec
    return dt.datetime.fromisoformat(spec[4:].replace("Z", "+00:00")).timestamp()


def assert_nothing_on_the_consumer_until(url: str, until: float) -> int:
    """Samples the consumer until `until` (epoch s): nothing pending, nothing ack-pending.
    Returns the number of samples."""
    samples = 0
    while time.time() < until:
        assert_consumer_idle(url)
        samples += 1
        time.sleep(0.1)
    return samples


@pytest.mark.timeout(240)
def test_a_long_retry_waits_as_a_scheduled_message_and_the_order_is_done_once(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. An order that fails its first two attempts ("fail-2"); ack_wait 2 s, RETRY_BASE_S=6.
    2. Attempt 1 fails: its retry (<= 6 s) is a plain nak with a delay.
    3. Attempt 2 fails: its retry (> 6 s) is rescheduled: ORDER_RETRIES holds one schedule,
       `@at` the retry time, carrying Orderflow-Status-Check and the order's counts; the status is
       `queued` with retry_at and scheduled, and GET /orders/{id} on a real ingest says so.
    4. While it waits, ORDERS' consumer has nothing pending and nothing ack-pending (sampled every
       0.1 s until the schedule fires): the autoscaler sees no work in progress.
    5. At the retry time the copy comes back as orders.default.<id> and attempt 3 runs, once, and
       succeeds: one `done`, status done with attempts=2, deliveries=3; the schedule is gone and
       nothing runs again afterwards."""
    url = nats_server.url
    worker = spawn("worker", **SETTINGS).wait_ready()
    ingest = spawn("ingest").wait_ready()
    [order_id] = run(publish_orders(url, 1, prefix="resched", username="fail-2"))

    st = wait_scheduled(url, order_id)
    scheduled_at = time.time()
    assert (st.attempts, st.deliveries) == (2, 2), st
    assert st.retry_at is not None and st.retry_at - scheduled_at > 4.5
    starts = [r for r in records_of(url, order_id) if r.event == "start"]
    assert [r.attempt for r in starts] == [1, 2]
    # attempt 1's retry was a plain nak(delay) of at most 6 s; attempt 2's waits longer
    assert starts[1].at - starts[0].at <= 6.0 + 1.0

    schedule = schedule_of(url, order_id)
    assert schedule.subject == f"{contract.SCHEDULE_PREFIX}default.{order_id}"
    h = schedule.headers
    assert h[contract.H_SCHEDULE_TARGET] == f"{contract.RETRY_PREFIX}default.{order_id}"
    assert (h[contract.H_STATUS_CHECK], h[contract.H_FAILED_ATTEMPTS], h[contract.H_DELIVERIES]) == (
        "1",
        "2",
        "2",
    )
    assert contract.decode_order(schedule.data).order_id == order_id
    fire_at = fires_at(schedule)
    assert abs(fire_at - st.retry_at) <= 1.0  # @at has whole seconds

    shown = ingest.order_view(order_id)
    assert shown["status"] == "queued" and shown["attempts"] == 2 and shown["scheduled"] is True
    assert shown["retry_at_s"] == pytest.approx(st.retry_at) and shown["retry_at"].endswith("Z")

    # The rescheduled delivery's ack is not confirmed: give it a moment to land, then nothing
    # may be on the consumer until the schedule fires.
    wait_until(lambda: run(consumer_info(url)).num_ack_pending == 0, 3, "the original to be acked", 0.05)
    samples = assert_nothing_on_the_consumer_until(url, fire_at - 0.3)
    assert samples >= 10, "the wait was too short to look at"

    wait_status(url, order_id, "done", 20, "attempt 3", 0.1)
    records = records_of(url, order_id)
    assert [(r.event, r.attempt) for r in records] == [
        ("start", 1),
        ("error", 1),
        ("start", 2),
        ("error", 2),
        ("start", 3),
        ("done", 3),
    ]
    assert records[4].at >= fire_at - 0.5  # not before its time
    final = status_of(url, order_id)
    assert final is not None
    assert (final.status, final.attempts, final.deliveries, final.scheduled) == ("done", 2, 3, False), final
    assert_fired(url, order_id, 1)
    time.sleep(5)  # > 2 x ack_wait: a leftover of the order would have been redelivered by now
    assert records_of(url, order_id) == records
    assert_consumer_idle(url)
    assert worker.metric('orderflow_work_done_total{status="done"}') == 1


@pytest.mark.timeout(240)
def test_a_rescheduled_order_that_keeps_failing_is_dead_lettered_after_max_deliver_failed_attempts(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. An order that always fails; MAX_DELIVER=3; ack_wait 2 s, RETRY_BASE_S=6.
    2. Attempt 1 fails (nak), attempt 2 fails (rescheduled), attempt 3 runs from the fired copy
       and fails: that is the third failed attempt, so the order is dead-lettered, not retried.
    3. ORDERS_DLQ holds the order's payload with its counts in the headers (3 failed attempts,
       3 deliveries over the two messages, no hand-back, no crash) and its error; status `dead`;
       ORDERS and ORDER_RETRIES hold nothing of it any more."""
    url = nats_server.url
    worker = spawn("worker", **SETTINGS).wait_ready()
    [order_id] = run(publish_orders(url, 1, prefix="doomed", username="fail-99"))
    wait_scheduled(url, order_id)
    wait_status(url, order_id, "dead", 30, "the dead letter", 0.1)
    assert [(r.event, r.attempt) for r in records_of(url, order_id)] == [
        ("start", 1),
        ("error", 1),
        ("start", 2),
        ("error", 2),
        ("start", 3),
        ("error", 3),
    ]
    st = status_of(url, order_id)
    assert st is not None
    assert (st.status, st.attempts, st.deliveries, st.handbacks, st.crashes) == ("dead", 3, 3, 0, 0), st
    assert (st.error or "").startswith("failed 3 attempts; last: Flaky: attempt 3 fails on purpose"), st.error
    h = the_dead_letter(url, order_id)
    assert h[contract.H_ERROR].startswith("failed 3 attempts")
    assert (h[contract.H_ATTEMPTS], h[contract.H_DELIVERIES]) == ("3", "3")
    assert (h[contract.H_HANDBACKS], h[contract.H_CRASHES]) == ("0", "0")
    assert h[contract.H_ORDER_ID] == order_id
    assert h[contract.H_SUBJECT] == contract.order_subject("default", order_id)  # the fired copy's
    assert not any(k.startswith("Nats-Schedule") for k in h)  # the order's headers, not the schedule's
    assert worker.metric("orderflow_dead_letters_total") == 1
    assert_fired(url, order_id, 1)
    assert_consumer_idle(url)


@pytest.mark.timeout(240)
def test_an_order_cancelled_while_its_retry_waits_as_a_schedule_never_runs_again(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. An order that fails once ("fail-1": it would succeed on its next attempt); with
       RETRY_BASE_S=16 its first retry waits [8, 16) s, so it is rescheduled at once.
    2. While it waits, `orderflow cancel ID`: no worker runs it, so it is marked cancelled.
    3. The schedule fires: the worker that receives the copy terms it without running it (the
       copy says to read the status). Status `cancelled`, one run only, nothing left on ORDERS'
       consumer or in ORDER_RETRIES."""
    url = nats_server.url
    worker = spawn("worker", **{**SETTINGS, "RETRY_BASE_S": 16}).wait_ready()
    [order_id] = run(publish_orders(url, 1, prefix="cancelme", username="fail-1"))
    wait_scheduled(url, order_id)
    fire_at = fires_at(schedule_of(url, order_id))

    out = cli(url, "cancel", order_id, "--timeout-s", "0.5")
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.time() < fire_at - 0.5, "the cancel came too late to prove anything"
    st = status_of(url, order_id)
    assert st is not None and st.status == "cancelled", st

    wait_until(
        lambda: (
            worker.metric('orderflow_task_duration_seconds_count{outcome="already_cancelled",type="default"}')
            == 1
        ),
        fire_at - time.time() + 15,
        "the fired copy to be refused",
        0.2,
    )
    time.sleep(5)  # > 2 x ack_wait
    assert [(r.event, r.attempt) for r in records_of(url, order_id)] == [("start", 1), ("error", 1)]
    st = status_of(url, order_id)
    assert st is not None and st.status == "cancelled", st
    assert_fired(url, order_id, 1)
    assert run(read_stream(url, contract.STREAM)) == []  # the copy was termed (work-queue: removed)
    assert_consumer_idle(url)
