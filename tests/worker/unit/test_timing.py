"""Every derived duration of the worker (worker/timing.py) keeps its promises, for many ack waits."""

from __future__ import annotations

import pytest
from standin import settings

from worker.timing import Timing


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
