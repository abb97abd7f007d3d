"""The long-job rehearsal, CI-sized (issue #10; SPEC §4.6): `orderflow chaos --profile long-jobs`
with small numbers. Jobs many times longer than the drain budget, a SIGTERM at least every 10 s
(the HPA's scale-downs and pod evictions), SIGKILLs and a NATS restart: no order is lost, done
twice or dead-lettered without a failure, and the checkpoints keep the work redone small.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rehearsals import LEDGER_FIGURES, run_small_rehearsal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


# 80 s: two sine periods of jobs 4-15 times the drain budget (hand-backs 0.2 s before the
# 2 s drain deadline; grace 12 s).
SHORT_LONG_JOBS = (
    "--profile long-jobs --seed 11 --duration 80 --peak-rps 2 --period 40 --work-s 8-30 "
    "--max-workers 4 --concurrency 8 --ack-wait-s 5 --kill-every-s 20 --evict-every-s 10 --drain-wait 120"
)


def test_long_jobs_survive_frequent_scale_downs_and_kills_and_redo_little_work(tmp_path: Path) -> None:
    """1. 80 s of a 0-2 RPS sine (40 s period) of 8-30 s jobs against 1-4 workers x 8 slots, ack_wait
       5 s, drain 2 s: every handed-back job is cut off long before it could finish.
    2. During the load: a pod eviction at least every 10 s (a random pod; the ReplicaSet replaces
       it at once) besides the HPA's scale-downs, ~4 SIGKILLs, 1 NATS restart.
    3. The ledger: every 200 done exactly once; none lost, done twice, in flight, or dead-lettered
       (without a failure or otherwise); jobs were handed back and resumed.
    4. The work redone (run records: each run's start progress against what earlier runs reached,
       a SIGKILLed run ending at the kill) is at most 10 % of the job time."""
    summary = run_small_rehearsal(tmp_path, SHORT_LONG_JOBS)
    f = summary["figures"]
    w = f["work"]
    report = {
        **{
            k: f[k]
            for k in (
                *LEDGER_FIGURES,
                "dead_letters",
                "scale_downs",
                "evictions",
                "sigterm_max_gap_s",
                "sigkills",
                "handed_back",
                "handbacks_per_order",
                "crashes_per_order",
                "nats_restarts",
                "time_to_drain_s",
            )
        },
        "work": w,
    }
    print(f"\nchaos (long jobs, short): {report}")
    assert f["accepted"] > 40, report
    assert f["lost"] == 0, summary["ledger"]
    assert f["done_twice"] == 0, summary["ledger"]
    assert f["dead_without_failure"] == 0, f["dead_letters"]
    assert f["in_flight"] == 0 and f["not_done_other"] == {}, summary["ledger"]
    assert f["done_once"] == f["accepted"] and summary["ok"]
    # the chaos really happened, and it interrupted long jobs
    # evictions are planned at most 10 s apart; a slow tick on a loaded machine may add a few
    assert f["evictions"] >= 5 and f["sigterm_max_gap_s"] <= 15, report
    assert f["sigkills"] >= 1 and f["nats_restarts"] == 1, report
    assert f["handbacks_per_order"]["max"] >= 1 and w["resumed_runs"] >= 1, report
    assert f["grace_kills"] == 0
    # the checkpoints kept what the interrupted runs did
    assert w["job_s"] > 0 and w["redone_share"] <= 0.10, w
    assert w["unended_runs"] == 0, w
    assert (tmp_path / "timeline.png").stat().st_size > 10_000
