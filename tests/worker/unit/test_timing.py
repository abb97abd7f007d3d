"""Every derived duration of the worker (worker/timing.py) keeps its promises, for many ack waits."""

from __future__ import annotations

import pytest
from standin import settings

from worker.timing import DrainDeadline, Timing


@pytest.mark.parametrize("ack_wait_s", [1, 2, 5, 30, 120, 3600])
def test_a_live_job_is_never_silent_long_enough_to_be_redelivered(ack_wait_s: float) -> None:
    t = Timing.derive(settings(), ack_wait_s)
    # in_progress when the last is heartbeat_s old, checked every tick: at most heartbeat + tick
    assert t.heartbeat_s + t.tick_s <= ack_wait_s / 2 + 1e-9
    # a live holder refreshes its lease before it lapses; a dead holder's lapses before its
    # message comes back (ack_wait after the last in_progress, which every lease write sends)
    assert t.heartbeat_s + t.tick_s < t.lease_s < ack_wait_s
    assert t.lease_after_s <= t.heartbeat_s
    # a blocked loop fails liveness before the heartbeats' silence reaches ack_wait
    assert t.loop_block_limit_s + t.heartbeat_s + t.tick_s < ack_wait_s
    # long retries leave the consumer only when they outlast a few ack waits
    assert t.reschedule_after_s >= 3 * ack_wait_s


@pytest.mark.parametrize("drain_s", [1, 2, 10, 20, 60, 300])
def test_a_hand_back_leaves_time_to_unwind_and_to_nak_before_the_deadline(drain_s: float) -> None:
    t = Timing.derive(settings(drain_timeout_s=drain_s))
    assert t.handback_lead_s == min(2.0, drain_s / 10)
    assert 0 < t.unwind_s < t.handback_lead_s


def test_the_timeout_sweep_is_a_tenth_of_the_timeout_at_most_a_second() -> None:
    t = Timing.derive(settings())
    assert t.timeout_tick_s(3600) == 1.0 and t.timeout_tick_s(0.5) == 0.05


def test_the_consumer_s_ack_wait_wins_over_the_setting() -> None:
    t = Timing.derive(settings(ack_wait_s=30), 12.0)
    assert (t.ack_wait_s, t.heartbeat_s, t.lease_s) == (12.0, 4.0, 9.0)


# --- the drain's deadline: the budget, or the pod's real SIGKILL time ----------------------------
def test_outside_a_cluster_or_without_a_deletion_the_budget_rules() -> None:
    t = Timing.derive(settings(drain_timeout_s=60))
    assert t.drain_deadline(None) == DrainDeadline(60.0, 2.0, "budget")
    assert Timing.kill_in_s(None, None, now=1000.0, since_sigterm_s=0.1) is None


def test_a_5s_grace_against_a_60s_budget_hands_back_well_before_the_sigkill() -> None:
    """deletionTimestamp = SIGTERM + 5 s, read 0.2 s after the SIGTERM: the SIGKILL is 4.8 s away,
    the drain gets 5 - 1 (margin) = 4 s from SIGTERM, the hand-back comes 10 % of that earlier."""
    t = Timing.derive(settings(drain_timeout_s=60))
    kill_in = Timing.kill_in_s(1005.0, 5.0, now=1000.2, since_sigterm_s=0.2)
    assert kill_in == pytest.approx(4.8)
    d = t.drain_deadline(kill_in, since_sigterm_s=0.2)
    assert d.ruled_by == "pod"
    assert d.drain_s == pytest.approx(4.0) and d.lead_s == pytest.approx(0.4)
    assert d.hand_back_s == pytest.approx(3.6) and d.unwind_s == pytest.approx(0.2)
    assert d.drain_s + t.pod_margin_s <= 5.0


def test_the_sooner_of_the_stamp_and_the_grace_counts() -> None:
    # The API's clock runs 3 s late against ours (or the stamp is truncated): the grace is sooner.
    assert Timing.kill_in_s(1008.0, 5.0, now=1000.0, since_sigterm_s=1.0) == 4.0
    # A preStop hook ran before the SIGTERM: the stamp is sooner than SIGTERM + grace.
    assert Timing.kill_in_s(1002.0, 30.0, now=1000.0, since_sigterm_s=0.0) == 2.0


@pytest.mark.parametrize("grace_s", [2, 3, 5, 10, 30, 61, 70, 600])
def test_the_drain_never_outlasts_the_budget_nor_the_sigkill_less_the_margin(grace_s: float) -> None:
    t = Timing.derive(settings(drain_timeout_s=60))
    d = t.drain_deadline(Timing.kill_in_s(1000.0 + grace_s, grace_s, 1000.0, 0.0))
    assert d.drain_s <= 60.0 and d.drain_s <= grace_s - t.pod_margin_s
    assert d.ruled_by == ("pod" if grace_s - t.pod_margin_s < 60 else "budget")
    assert 0 <= d.unwind_s < d.lead_s <= t.handback_lead_s and d.hand_back_s <= d.drain_s


def test_a_grace_shorter_than_the_margin_hands_back_at_once() -> None:
    t = Timing.derive(settings(drain_timeout_s=60))
    d = t.drain_deadline(0.5)
    assert (d.drain_s, d.hand_back_s, d.ruled_by) == (0.0, 0.0, "pod")
