"""The long-job rehearsal, CI-sized (issue #10; SPEC §4.6): `orderflow chaos --profile long-jobs`
with small numbers. Jobs many times longer than the drain budget, a SIGTERM at least every 10 s
(the HPA's scale-downs and pod evictions), SIGKILLs and a NATS restart: no order is lost, done
twice or dead-lettered without a failure, and the checkpoints keep the work redone small.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import find_binary

from orderflow.config import WorkRange
from orderflow_tools.chaos import rehearsal
from orderflow_tools.chaos.plan import Settings
from orderflow_tools.loadrun import find_k6

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


def short_long_jobs(out: Path, seed: int) -> Settings:
    return Settings(
        out=out,
        duration_s=80,  # two sine periods
        peak_rps=2,
        period_s=40,
        work=WorkRange(8, 30),  # 4-15 times the drain budget
        min_workers=1,
        max_workers=4,
        concurrency=8,
        ack_wait_s=5,
        drain_timeout_s=2,  # hand-backs 0.2 s before the deadline; grace 12 s
        max_deliver=5,
        max_crashes=10,
        kill_every_s=20,
        evict_every_s=10,
        nats_restarts=1,
        ingest_restarts=0,
        seed=seed,
        hpa_sync_s=1,
        scale_down_window_s=5,
        scale_down_pods=1,
        scale_down_period_s=2,
        drain_wait_s=120,
        ingest_shutdown_delay_s=1,
        profile="long-jobs",
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
    find_binary("nats-server")
    if find_k6() is None:
        find_binary("k6")  # fails in CI, skips elsewhere
    summary = rehearsal.run(short_long_jobs(tmp_path, seed=11))
    f = summary["figures"]
    w = f["work"]
    report = {
        **{
            k: f[k]
            for k in (
                "accepted",
                "done_once",
                "lost",
                "done_twice",
                "in_flight",
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
