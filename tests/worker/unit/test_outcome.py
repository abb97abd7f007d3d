"""The settler (worker/outcome.py): each outcome -> the status it stores and what it does with the
message, in that order, against the stand-in transport."""

from __future__ import annotations

import asyncio

import pytest
from standin import FakeMsg, StandInTransport, limits, settings

from orderflow import contract
from worker.delivery import Books, Delivery, Kind, Outcome
from worker.outcome import Settler, retry_delay_s
from worker.transport import Meta


def setup(
    delivered: int = 1,
    failed: int = 0,
    schedules: bool = True,
    transport: StandInTransport | None = None,
    **env: object,
) -> tuple[StandInTransport, Settler, Delivery]:
    t = transport or StandInTransport()
    s = Settler(t, "me", limits(settings(**env), reschedule_after_s=90.0), 22.5, schedules)
    msg = FakeMsg("o-1", delivered=delivered)
    d = Delivery(msg, Meta(msg.reply), "default")
    d.order_id = "o-1"
    d.books = Books(failed=failed)
    return t, s, d


def settle(s: Settler, d: Delivery, kind: Kind, error: str | None = None) -> Kind:
    return asyncio.run(s.settle(d, Outcome(kind, error)))


def test_done_is_stored_confirmed_before_a_plain_ack() -> None:
    t, s, d = setup()
    assert settle(s, d, Kind.DONE) is Kind.DONE
    assert t.ops() == ["put:done", "ack"]
    assert t.calls[0][2] == ("done", True)


def test_a_failed_attempt_is_counted_stored_as_queued_then_naked_with_the_backoff() -> None:
    t, s, d = setup(RETRY_BASE_S=1)
    settle(s, d, Kind.RETRY, "boom")
    assert t.ops() == ["put:queued", "nak"]
    record = t.records["o-1"]
    assert (record.attempts, record.error) == (1, "boom") and record.retry_at is not None
    delay = t.calls[-1][2]
    assert 0.5 <= delay <= 1.0  # base * 2^0, jittered 50-100 %


def test_the_last_failed_attempt_goes_to_the_dlq_first_then_dead_then_term() -> None:
    t, s, d = setup(failed=4)  # MAX_DELIVER 5: this is the 5th failure
    assert settle(s, d, Kind.TIMEOUT, "timed out after 1s") is Kind.DEAD
    assert t.ops() == ["publish", "put:dead", "term"]
    subject, _, headers = t.published[0]
    assert subject == "dlq.orders.default.o-1"
    assert headers[contract.H_ATTEMPTS] == "5" and headers[contract.H_ERROR].startswith("failed 5 attempts")
    assert headers[contract.H_REASON] == "attempts"


def test_a_failed_attempt_past_the_delivery_cap_is_dead_lettered_by_the_same_rule_as_admission() -> None:
    """Limits.spent is the one judgement: a failure that leaves the order over its delivery cap (a
    job adopted across redeliveries) dead-letters it now, with admission's reason and words."""
    t, s, d = setup(delivered=11, MAX_DELIVERIES=10)
    assert settle(s, d, Kind.RETRY, "boom") is Kind.DEAD
    _, _, headers = t.published[0]
    assert headers[contract.H_REASON] == "deliveries"
    assert headers[contract.H_ERROR] == "delivered 11 times without a result; last: boom"


def test_a_dlq_that_cannot_store_keeps_the_message_and_the_counts() -> None:
    t, s, d = setup(failed=4)
    t.fail_publish = True
    assert settle(s, d, Kind.RETRY, "boom") is Kind.RETRY
    assert t.ops() == ["put:queued", "nak"]  # never term what is not safely in the DLQ
    assert t.records["o-1"].attempts == 5


def test_a_hand_back_costs_no_attempt_and_naks_at_once() -> None:
    t, s, d = setup(failed=2)
    settle(s, d, Kind.HANDED_BACK)
    assert t.ops() == ["put:queued", "nak"]
    assert t.calls[-1][2] is None  # immediate redelivery
    record = t.records["o-1"]
    assert (record.attempts, record.handbacks) == (2, 1)


def test_a_long_retry_waits_as_a_scheduled_message_and_the_original_is_acked() -> None:
    t, s, d = setup(failed=6, MAX_DELIVER=20, RETRY_BASE_S=60, RETRY_MAX_S=3600)
    settle(s, d, Kind.RETRY, "boom")
    assert t.ops() == ["publish", "put:queued", "ack"]
    subject, data, headers = t.published[0]
    assert subject == "orderflow.schedule.default.o-1"
    assert headers[contract.H_SCHEDULE_TARGET] == "orderflow.retry.default.o-1"
    assert headers[contract.H_SCHEDULE].startswith("@at ")
    assert headers[contract.H_FAILED_ATTEMPTS] == "7" and headers[contract.H_STATUS_CHECK] == "1"
    assert headers[contract.H_MSG_ID] == "o-1.retry.7"
    assert data == d.msg.data
    assert t.records["o-1"].scheduled


def test_without_schedules_a_long_retry_stays_a_nak() -> None:
    t, s, d = setup(failed=6, schedules=False, MAX_DELIVER=20, RETRY_BASE_S=60, RETRY_MAX_S=3600)
    settle(s, d, Kind.RETRY, "boom")
    assert t.ops() == ["put:queued", "nak"]


def test_poison_is_copied_to_the_dlq_then_failed_and_termed_never_retried() -> None:
    t, s, d = setup()
    assert settle(s, d, Kind.POISON, "nothing to invoice") is Kind.POISON
    assert t.ops() == ["publish", "put:failed", "term"]
    subject, data, headers = t.published[0]
    assert subject == "dlq.orders.default.o-1" and data == d.msg.data
    assert headers[contract.H_REASON] == "poison" and headers[contract.H_ERROR] == "nothing to invoice"
    assert t.records["o-1"].status == "failed"


def test_an_undecodable_order_goes_to_the_dlq_with_its_reason() -> None:
    t, s, d = setup()
    asyncio.run(s.settle(d, Outcome(Kind.POISON, "undecodable order: bad JSON", reason="undecodable")))
    assert t.ops() == ["publish", "put:failed", "term"]
    assert t.published[0][2][contract.H_REASON] == "undecodable"


def test_poison_that_the_dlq_cannot_store_is_kept_not_termed() -> None:
    t, s, d = setup()
    t.fail_publish = True
    assert settle(s, d, Kind.POISON, "nothing to invoice") is Kind.RETRY
    assert t.ops() == ["put:queued", "nak"]


def test_a_cancel_records_cancelled_terms_and_forgets_the_marker() -> None:
    t, s, d = setup()
    settle(s, d, Kind.CANCELLED)
    assert t.ops() == ["put:cancelled", "term", "forget_cancel"]


def test_a_deferral_writes_nothing_and_naks_for_the_lease_s_rest() -> None:
    t, s, d = setup()
    asyncio.run(s.settle(d, Outcome(Kind.RUNNING_ELSEWHERE, "running on x", 3.5)))
    assert t.ops() == ["nak"] and t.calls[0][2] == 3.5


def test_an_unstarted_delivery_records_that_it_ended_cleanly_then_naks() -> None:
    t, s, d = setup()
    settle(s, d, Kind.UNSTARTED)
    assert t.ops() == ["put:queued", "nak"]
    assert t.records["o-1"].deliveries == 1


def test_an_unstarted_delivery_leaves_a_live_lease_of_another_worker_alone() -> None:
    import time

    t, s, d = setup(delivered=2)
    t.records["o-1"] = contract.StatusRecord("o-1", "processing", worker_id="x", lease_until=time.time() + 10)
    settle(s, d, Kind.UNSTARTED)
    assert t.ops() == ["get", "nak"]


def test_a_final_status_is_retried_through_a_short_outage() -> None:
    t, s, d = setup()
    t.fail_puts = 2
    settle(s, d, Kind.DONE)
    assert t.ops() == ["put:done", "ack"]


def test_a_done_record_drops_the_checkpoint_and_a_queued_one_keeps_it() -> None:
    import msgspec

    t, s, d = setup()
    d.books.checkpoint = msgspec.Raw(b'{"i":3}')
    settle(s, d, Kind.HANDED_BACK)
    assert bytes(t.records["o-1"].checkpoint) == b'{"i":3}'
    settle(s, d, Kind.DONE)
    assert len(t.records["o-1"].checkpoint) == 0


@pytest.mark.parametrize("failed", range(1, 8))
def test_retry_delays_grow_with_failed_attempts_and_are_capped(failed: int) -> None:
    lo = retry_delay_s(failed, 1.0, 30.0, rand=0.0)
    hi = retry_delay_s(failed, 1.0, 30.0, rand=1.0)
    assert lo == min(30.0, 2 ** (failed - 1)) / 2 and hi == min(30.0, 2 ** (failed - 1))
    assert retry_delay_s(failed + 1, 1.0, 30.0, rand=0.0) >= lo


class HeldInProgress(StandInTransport):
    """The stand-in transport, whose in_progress waits (nats-py flushing through a reconnect)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushing = asyncio.Event()
        self.release = asyncio.Event()

    async def in_progress(self, msg: object) -> None:
        self.calls.append(("in_progress", "o-1", None))
        self.flushing.set()
        await self.release.wait()


def test_a_lease_whose_in_progress_waited_while_the_job_ended_is_not_written_after_its_done() -> None:
    """1. A heartbeat's lease sends its in_progress, which waits (nats-py flushing its buffer
       through a reconnect);
    2. meanwhile the job ends and its outcome settles: `done` stored, then ack;
    3. the lease goes on: it must not write `processing` after the `done` (the order would stay
       `processing` for good: the chaos rehearsal found one around a NATS restart)."""
    t, s, d = setup(transport=HeldInProgress())
    assert isinstance(t, HeldInProgress)
    d.run_started = 1.0

    async def scenario() -> None:
        lease = asyncio.create_task(s.lease(d, confirm=False))
        await t.flushing.wait()
        assert await s.settle(d, Outcome(Kind.DONE)) is Kind.DONE
        t.release.set()
        await lease

    asyncio.run(scenario())
    assert t.ops() == ["in_progress", "put:done", "ack"]
    assert t.records["o-1"].status == "done"
