"""Admission, rule by rule (worker/job.py `admit`): facts in, a verdict out, no I/O."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from standin import FakeMsg, limits, settings

from orderflow import contract
from worker.admission import Verdict, admit
from worker.delivery import Delivery, Kind, Limits
from worker.transport import Meta

NOW = 1_000_000.0
LEASE_S = 22.5


def delivery(delivered: int = 1, headers: dict[str, str] | None = None) -> Delivery:
    msg = FakeMsg("o-1", delivered=delivered, headers=headers)
    d = Delivery(msg, Meta(msg.reply), "default")
    d.order_id = "o-1"
    return d


def record(status: str, **fields: Any) -> contract.StatusRecord:
    return contract.StatusRecord("o-1", status, updated_at=NOW - 1, **fields)


def verdict(
    d: Delivery,
    previous: contract.StatusRecord | None,
    lim: Limits | None = None,
    *,
    cancelled: bool = False,
    running_here: bool = False,
    orphan_checked: bool = False,
    suspect: bool = False,
) -> Verdict:
    return admit(
        d,
        previous,
        cancelled=cancelled,
        worker_id="me",
        running_here=running_here,
        limits=lim or limits(),
        lease_s=LEASE_S,
        orphan_checked=orphan_checked,
        suspect=suspect,
        now=NOW,
    )


def kind(v: Verdict) -> Kind | None:
    return None if v.outcome is None else v.outcome.kind


def test_a_first_delivery_with_no_record_runs() -> None:
    v = verdict(delivery(), None)
    assert v.outcome is None and not v.crash and not v.orphan


def test_1_a_cancel_marker_or_a_cancelled_record_terms_it_unrun() -> None:
    assert kind(verdict(delivery(), None, cancelled=True)) is Kind.ALREADY_CANCELLED
    assert kind(verdict(delivery(2), record("cancelled"))) is Kind.ALREADY_CANCELLED


def test_2_a_done_order_is_acked_unrun() -> None:
    assert kind(verdict(delivery(2), record("done"))) is Kind.ALREADY_DONE


@pytest.mark.parametrize("status", ["dead", "failed"])
def test_3_a_dead_or_failed_order_is_termed_unless_replayed(status: str) -> None:
    assert kind(verdict(delivery(2), record(status, attempts=5))) is Kind.ALREADY_FINAL
    replay = delivery(1, {contract.H_REPLAY: "1", contract.H_STATUS_CHECK: "1"})
    v = verdict(replay, record(status, attempts=5, crashes=2))
    assert v.outcome is None and v.books is not None  # it runs, with fresh books
    assert (v.books.failed, v.books.crashes) == (0, 0)


def test_3_a_replay_is_fresh_once_then_its_failures_count_up_to_the_dead_letter() -> None:
    """The replay header rides on every redelivery of the replayed message: only the delivery that
    finds the dead record starts afresh; the next ones carry the replay's own failures."""
    headers = {contract.H_REPLAY: "1", contract.H_STATUS_CHECK: "1"}
    lim = limits(settings(MAX_DELIVER=3))
    again = delivery(2, headers)
    v = verdict(again, record("queued", attempts=1, crashes=1), lim)
    assert v.outcome is None and v.books is not None and (v.books.failed, v.books.crashes) == (1, 1)
    last = delivery(4, headers)
    v = verdict(last, record("queued", attempts=3), lim)
    assert kind(v) is Kind.DEAD and v.outcome is not None and v.outcome.reason == "attempts"


def test_4_the_leftover_of_a_scheduled_retry_is_acked() -> None:
    rescheduled = record("queued", attempts=3, scheduled=True, retry_at=NOW + 100)
    assert kind(verdict(delivery(2), rescheduled)) is Kind.SUPERSEDED
    # The scheduled copy itself carries the count in its headers: it runs.
    copy = delivery(
        1, {contract.H_STATUS_CHECK: "1", contract.H_FAILED_ATTEMPTS: "3", contract.H_DELIVERIES: "4"}
    )
    v = verdict(copy, rescheduled)
    assert v.outcome is None and v.books is not None
    assert (v.books.failed, copy.deliveries) == (3, 5)


def test_5_a_live_lease_elsewhere_is_deferred_until_it_ends_and_costs_nothing() -> None:
    d = delivery(2)
    v = verdict(d, record("processing", worker_id="other", lease_until=NOW + 10, attempts=1))
    assert kind(v) is Kind.RUNNING_ELSEWHERE
    assert v.outcome is not None and v.outcome.delay_s == pytest.approx(10.5)
    assert v.books is not None and (v.books.failed, v.books.crashes) == (1, 0)


def test_5_a_record_without_lease_until_is_timed_from_updated_at() -> None:
    # written by a worker of the previous release during a rolling upgrade
    v = verdict(delivery(2), contract.StatusRecord("o-1", "processing", updated_at=NOW - 5, worker_id="old"))
    assert kind(v) is Kind.RUNNING_ELSEWHERE
    v = verdict(delivery(2), contract.StatusRecord("o-1", "processing", updated_at=NOW - 30, worker_id="old"))
    assert v.outcome is None and v.crash


def test_5_the_same_order_running_here_under_another_delivery_is_deferred() -> None:
    v = verdict(delivery(2), record("processing", worker_id="me", lease_until=NOW + 10), running_here=True)
    assert kind(v) is Kind.RUNNING_ELSEWHERE


def test_6_a_lapsed_lease_is_a_crash_with_the_work_it_lost() -> None:
    d = delivery(3)
    previous = record(
        "processing",
        worker_id="other",
        lease_until=NOW - 1,
        started_at=NOW - 60,
        checkpoint_at=NOW - 11,
        crashes=1,
    )
    v = verdict(d, previous)
    assert v.outcome is None and v.crash
    assert v.books is not None and v.books.crashes == 2
    assert d.books.crashes == 0  # the delivery is left as it came: the verdict has the new counts
    assert v.lost_s == pytest.approx(10.0)  # updated_at - last checkpoint


def test_6_our_own_id_on_a_lease_we_do_not_run_is_a_crash_of_our_previous_life() -> None:
    v = verdict(delivery(2), record("processing", worker_id="me", lease_until=NOW + 10))
    assert v.outcome is None and v.crash


def test_6_a_redelivery_with_no_record_waits_once_then_counts_a_crash() -> None:
    d = delivery(2)
    assert verdict(d, None).orphan
    v = verdict(d, None, orphan_checked=True)
    assert v.crash and v.books is not None and v.books.crashes == 1 and v.outcome is None


def test_6_after_a_nats_restart_a_first_delivery_with_no_record_also_waits_but_is_no_crash() -> None:
    """A restored consumer may have lost the delivery of a job still running elsewhere and send it
    again as a first delivery (seen in the chaos rehearsal)."""
    d = delivery(1)
    assert verdict(d, None, suspect=True).orphan
    v = verdict(d, None, suspect=True, orphan_checked=True)
    assert v.outcome is None and not v.crash and v.books is not None and v.books.crashes == 0


def test_6_hand_backs_and_retries_leave_records_so_their_redelivery_is_no_crash() -> None:
    d = delivery(4)
    v = verdict(d, record("queued", handbacks=3, attempts=0))
    assert v.outcome is None and not v.crash
    assert v.books is not None and v.books.handbacks == 3


def test_7_the_third_crash_dead_letters_with_the_reason() -> None:
    d = delivery(4)
    v = verdict(d, record("processing", worker_id="x", lease_until=NOW - 1, crashes=2))
    assert kind(v) is Kind.DEAD and v.crash
    assert v.outcome is not None and v.outcome.error == "its worker died 3 times while running it"


def test_7_the_delivery_cap_dead_letters_with_its_own_reason() -> None:
    lim = limits(settings(max_deliveries=10))
    d = delivery(11)
    v = verdict(d, record("queued", handbacks=10), lim)
    assert kind(v) is Kind.DEAD
    assert v.outcome is not None and v.outcome.error == "delivered 11 times without a result"


def test_7_out_of_attempts_dead_letters() -> None:
    v = verdict(delivery(6), record("queued", attempts=5))
    assert kind(v) is Kind.DEAD
    assert v.outcome is not None and v.outcome.error == "failed 5 attempts"


def test_the_books_carry_the_checkpoint_over() -> None:
    d = delivery(2)
    raw = msgspec.Raw(b'{"cursor":7}')
    books = verdict(d, record("queued", handbacks=1, checkpoint=raw, checkpoint_at=NOW - 2)).books
    assert books is not None and books.checkpoint is not None
    assert bytes(books.checkpoint) == b'{"cursor":7}'


def test_time_defaults_to_now() -> None:
    d = delivery(2)
    v = admit(
        d,
        record("processing", worker_id="other", lease_until=time.time() + 5),
        cancelled=False,
        worker_id="me",
        running_here=False,
        limits=limits(),
        lease_s=LEASE_S,
    )
    assert kind(v) is Kind.RUNNING_ELSEWHERE
