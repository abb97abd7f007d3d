"""The chaos rehearsal's fault schedule and options, in process: node kills on a cluster come on
top of the other faults and leave a profile without them as it was."""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import rehearsals
from rehearsals import small_rehearsal

from orderflow_tools import chaos
from orderflow_tools.chaos.plan import Settings, schedule


def profile(**changes: Any) -> Settings:
    s = small_rehearsal(
        Path("/nonexistent"),
        "--seed 7 --duration 300 --peak-rps 30 --period 60 --work-s 0.2-6 --max-workers 4 "
        "--concurrency 16 --ack-wait-s 30 --drain-timeout-s 3 --kill-every-s 25 --drain-wait 90",
    )
    return replace(s, **changes)


def test_node_kills_come_on_top_of_the_other_faults_which_stay_as_they_were() -> None:
    before = schedule(profile(), random.Random(7))
    with_kills = schedule(profile(nats_cluster=3, node_kills=2), random.Random(7))
    assert [f for f in with_kills if f.kind != "node_kill"] == before
    kills = [f for f in with_kills if f.kind == "node_kill"]
    assert len(kills) == 2
    assert all(300 * 0.15 <= f.at_s <= 300 * 0.85 for f in kills)
    others = [f for f in with_kills if f.kind in ("nats_restart", "ingest_restart")]
    assert all(abs(k.at_s - o.at_s) >= 10 for k in kills for o in others)


def parse(*argv: str) -> argparse.Namespace:
    return rehearsals.parse("--out", "/tmp/x", *argv)


def test_a_cluster_gets_one_node_kill_unless_told_and_one_node_none() -> None:
    assert chaos.settings_from_args(parse("--nats-cluster", "3")).node_kills == 1
    assert chaos.settings_from_args(parse("--nats-cluster", "3", "--node-kills", "0")).node_kills == 0
    assert chaos.settings_from_args(parse()).node_kills == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--node-kills", "1"), "--node-kills needs --nats-cluster"),
        (("--nats-cluster", "2"), "--nats-cluster needs at least 3 nodes"),
    ],
)
def test_node_kills_without_a_cluster_fail_fast(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert chaos.main(parse(*argv)) == 2
    assert message in capsys.readouterr().err


def test_spot_notices_come_on_top_of_the_other_faults_which_stay_as_they_were() -> None:
    """Issue #25: spot notices are drawn last, so the same seed keeps every other fault."""
    before = schedule(profile(evict_every_s=20), random.Random(7))
    with_spot = schedule(profile(evict_every_s=20, spot_every_s=45), random.Random(7))
    assert [f for f in with_spot if f.kind != "spot"] == before
    spots = [f.at_s for f in with_spot if f.kind == "spot"]
    assert 3 <= len(spots) and all(0 < t < 300 for t in spots)


def test_platform_deadlines_reads_the_pods_deadline_unless_told_off_and_scales_the_notice() -> None:
    """The profile's workers read their pod's deletion (--deadline-aware on by default; off for
    the comparison), its scale-downs draw short graces, and the two-minute spot notice is scaled by
    its 20 s drain against the chart's 60 s: 40 s. Other profiles keep the budget as before."""
    on = chaos.settings_from_args(parse("--profile", "platform-deadlines"))
    assert (on.deadline_aware, on.short_grace, on.spot_notice_s, on.grace_s) == (True, True, 40.0, 30.0)
    off = chaos.settings_from_args(parse("--profile", "platform-deadlines", "--deadline-aware", "off"))
    assert not off.deadline_aware and replace(off, deadline_aware=True) == on
    default = chaos.settings_from_args(parse())
    assert (default.deadline_aware, default.short_grace, default.spot_every_s) == (False, False, 0.0)
