"""The Kubernetes decisions the chaos rehearsal replays: the HPA's replica count, the ReplicaSet's
scale-down victim by the pod-deletion-cost the workers export, and the fault schedule. Pure
functions, no processes."""

from __future__ import annotations

import random
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

from rehearsals import small_rehearsal

from orderflow.config import WorkRange
from orderflow_tools.chaos.kube import Autoscaler, HpaPolicy, keep_annotation, pick_victims
from orderflow_tools.chaos.plan import schedule
from orderflow_tools.chaos.procs import Pod
from orderflow_tools.kit import Process


def pod(
    name: str,
    created_at: float,
    cost: int,
    ready_since: float | None = 0.0,
    restarts: int = 0,
    uid: str = "",
) -> Pod:
    """A pod whose annotation already says `cost` (as its worker exports it)."""
    p = Pod(name, 0, created_at, Process([], {}, Path("/dev/null")), uid=uid or name)
    p.ready, p.ready_since, p.restarts = ready_since is not None, ready_since, restarts
    p.metrics = {"orderflow_tasks_in_flight": float(cost > 0), "orderflow_pod_deletion_cost": float(cost)}
    p.cost = cost
    return p


POLICY = HpaPolicy(
    min_replicas=1,
    max_replicas=6,
    target_per_pod=100,
    scale_down_window_s=30,
    scale_down_pods=1,
    scale_down_period_s=10,
)


def test_the_hpa_scales_up_at_once_and_by_the_backlog_per_pod() -> None:
    hpa = Autoscaler(POLICY)
    assert hpa.desired(0, 1, 350) == 4  # ceil(350 / 100), at most max(4 pods, 100%) more
    assert hpa.desired(1, 4, 2000) == 5  # 4 pods added in this 15 s period already: one more
    assert hpa.desired(20, 5, 2000) == 6  # a new period; clamped to max_replicas
    assert hpa.desired(21, 6, 610) == 6  # within the 10% tolerance: no change


def test_the_charts_hpa_keeps_a_fifth_of_the_slots_free() -> None:
    """As the chart renders it: the larger of the backlog and the running jobs / 0.8, per 100 slots,
    tolerance 0.2. 1. 400 running with nothing waiting asks for 5 pods, not 4. 2. Within 20 % of
    the current count: no change. 3. A backlog larger than running / 0.8 wins."""
    hpa = Autoscaler(replace(POLICY, utilisation_target=0.8, tolerance=0.2))
    assert hpa.desired(0, 4, 400, running=400) == 5  # max(400, 400 / 0.8 = 500) / 100
    assert hpa.desired(1, 5, 460, running=370) == 5  # 462.5 / 500: within the tolerance
    assert hpa.desired(20, 5, 900, running=500) == 6  # the backlog wins; clamped to max_replicas
    lag_only = Autoscaler(POLICY)
    assert lag_only.desired(0, 4, 400, running=400) == 4  # before issue #14: the backlog alone


def test_the_hpa_scales_down_only_after_the_window_and_one_pod_per_period() -> None:
    """1. Backlog 550 for 6 pods -> 6. 2. The backlog vanishes: nothing happens for the 30 s window.
    3. Then one pod per 10 s period: 5, 4, ... never faster."""
    hpa = Autoscaler(POLICY)
    assert hpa.desired(0, 6, 550) == 6
    replicas = 6
    history = []
    for t in range(5, 90, 5):
        replicas = hpa.desired(t, replicas, 0)
        history.append((t, replicas))
    assert [r for t, r in history if t <= 30] == [6] * 6
    downs = [(t, r) for (t, r), (_, before) in zip(history, [(0, 6), *history], strict=False) if r < before]
    assert [r for _, r in downs] == [5, 4, 3, 2, 1]
    gaps = [b[0] - a[0] for a, b in pairwise(downs)]
    assert min(gaps) >= 10


def test_a_scale_down_deletes_not_ready_then_the_least_work_at_stake_then_the_newest_pods_first() -> None:
    busy_old = pod("busy-old", 0, cost=64, ready_since=1)
    busy_new = pod("busy-new", 50, cost=4, ready_since=51)
    idle_old = pod("idle-old", 0, cost=0, ready_since=1)
    idle_new = pod("idle-new", 60, cost=0, ready_since=61)
    starting = pod("starting", 70, cost=0, ready_since=None)
    pods = [busy_old, busy_new, idle_old, idle_new, starting]
    assert [p.name for p in pick_victims(pods, 5, now=100)] == [
        "starting",
        "idle-new",
        "idle-old",
        "busy-new",
        "busy-old",
    ]
    busy_old.phase = "terminating"
    assert busy_old not in pick_victims(pods, 5, now=100)


def test_equal_costs_go_newest_first_in_log2_buckets_and_by_uid_inside_one() -> None:
    """ActivePodsWithRanks with LogarithmicScaleDown: ready 40 s and 50 s ago share a bucket
    (2^35 ns = 34.4 s .. 68.7 s), so the UID decides; ready 20 s ago is in a newer bucket."""
    a = pod("a", 0, cost=8, ready_since=60, uid="b-uid")  # ready 40 s
    b = pod("b", 0, cost=8, ready_since=50, uid="a-uid")  # ready 50 s
    c = pod("c", 0, cost=8, ready_since=80, uid="z-uid")  # ready 20 s
    assert [p.name for p in pick_victims([a, b, c], 3, now=100)] == ["c", "b", "a"]
    # ready in the same second: then more restarts first, then the newer pod (created 20 s ago,
    # against 90 s: another bucket)
    d = pod("d", 10, cost=8, ready_since=80.2, restarts=1)
    e = pod("e", 80, cost=8, ready_since=80.7)
    assert [p.name for p in pick_victims([e, d], 2, now=100)] == ["d", "e"]
    d.restarts = 0
    assert [p.name for p in pick_victims([d, e], 2, now=100)] == ["e", "d"]


def test_the_annotation_follows_the_exported_cost_as_the_keeper_patches_it() -> None:
    """1. The worker exports 16: the annotation takes it. 2. It moves to 32 two seconds later: the
    keeper waits out its 5 s interval. 3. `busy` mode (before issue #14) says 100 for any busy pod."""
    p = pod("w", 0, cost=0)
    p.metrics = {"orderflow_tasks_in_flight": 3, "orderflow_pod_deletion_cost": 16}
    keep_annotation(p, 10, "work", 5)
    assert p.cost == 16
    p.metrics["orderflow_pod_deletion_cost"] = 32
    keep_annotation(p, 12, "work", 5)
    assert p.cost == 16
    keep_annotation(p, 15, "work", 5)
    assert p.cost == 32
    keep_annotation(p, 21, "busy", 5)
    assert p.cost == 100
    p.metrics["orderflow_tasks_in_flight"] = 0
    keep_annotation(p, 27, "busy", 5)
    assert p.cost == 0


# A small rehearsal's settings; each test changes what it is about.
SMALL = small_rehearsal(
    Path("/tmp"),
    "--seed 3 --duration 600 --peak-rps 10 --period 60 --work-s 1-2 --max-workers 3 --concurrency 4 "
    "--ack-wait-s 5 --drain-timeout-s 3 --max-deliver 5 --kill-every-s 60 --nats-restarts 2 --drain-wait 60",
)


def test_the_fault_schedule_is_seeded_and_inside_the_load() -> None:
    s = SMALL
    a, b = schedule(s, random.Random(3)), schedule(s, random.Random(3))
    assert a == b
    kinds = [f.kind for f in a]
    assert kinds.count("nats_restart") == 2 and kinds.count("ingest_restart") == 1
    assert 5 <= kinds.count("sigkill") <= 20
    assert all(0 < f.at_s < 600 for f in a)
    assert s.grace_s == 13  # ceil(drain 3) + NATS drain 5 + safety 5, as the chart derives it


def test_evictions_never_leave_a_longer_gap_than_asked_and_move_no_other_fault() -> None:
    s = replace(
        SMALL,
        duration_s=300,
        peak_rps=1,
        work=WorkRange(20, 90),
        drain_timeout_s=2,
        kill_every_s=30,
        nats_restarts=1,
        ingest_restarts=0,
    )
    without = schedule(s, random.Random(3))
    with_evictions = schedule(replace(s, evict_every_s=15), random.Random(3))
    assert [f for f in with_evictions if f.kind != "evict"] == without
    times = [0.0, *(f.at_s for f in with_evictions if f.kind == "evict")]
    assert len(times) > 15 and max(b - a for a, b in pairwise(times)) <= 15
