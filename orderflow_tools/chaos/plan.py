"""What a rehearsal does and when: its settings, its profiles, and the seeded schedule of faults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderflow.config import WorkRange
from orderflow.envvalues import parse_work


@dataclass(frozen=True)
class Settings:
    out: Path
    duration_s: float  # of the load; the drain wait and the ledger come after
    peak_rps: float
    period_s: float
    work: WorkRange
    min_workers: int
    max_workers: int
    concurrency: int
    ack_wait_s: float
    drain_timeout_s: float
    max_deliver: int
    kill_every_s: float  # mean gap between SIGKILLs of a worker; 0 = none
    nats_restarts: int
    ingest_restarts: int
    seed: int
    hpa_sync_s: float
    scale_down_window_s: float
    scale_down_pods: int
    scale_down_period_s: float
    drain_wait_s: float  # at most this long after the load for the backlog to empty
    ingest_shutdown_delay_s: float
    max_crashes: int = 10  # ORDERFLOW_MAX_CRASHES: the chaos SIGKILLs are not the orders' doing
    evict_every_s: float = 0.0  # the longest gap between two pod evictions (node drains); 0 = none
    checkpoints: bool = True  # ORDERFLOW_WORK_CHECKPOINTS of the demo handler
    priority: str = "auto"  # ORDERFLOW_PRIORITY: pull priority groups (auto) or not (off)
    cost_mode: str = "work"  # the replayed pod-deletion-cost: work at stake (now) or busy 0/100 (before)
    # The replayed autoscaler: as the chart renders it (backlog and slot utilisation at
    # UTILISATION_TARGET, tolerance HPA_TOLERANCE), or the backlog alone at the cluster's default
    # tolerance (lag: before issue #14).
    hpa: str = "chart"
    cost_interval_s: float = 5.0  # the keeper's minimum interval between patches (the chart's default)
    profile: str = "default"
    restart_delay_s: float = 1.0  # the kubelet restarts a killed container after this
    nats_drain_margin_s: float = 5.0  # as the chart's worker.termination
    safety_margin_s: float = 5.0
    # On a local JetStream cluster of this many nodes (0: one nats-server), with R3 streams;
    # node_kills SIGKILLs of the ORDERS stream leader's node, each started again node_down_s later.
    nats_cluster: int = 0
    node_kills: int = 0
    node_down_s: float = 10.0
    # Issue #25, the platform's real deadlines: scale-downs with a grace drawn between 2 s and the
    # derived grace (`kubectl delete --grace-period`, controllers), spot-style notices every
    # spot_every_s on average (the node goes spot_notice_s after its notice: two minutes, scaled
    # to the rehearsal's drain), and whether the workers read their pod's deadline (the stand-in
    # Kubernetes API, orderflow_tools/kit/kubeapi.py) or keep their budget.
    short_grace: bool = False
    spot_every_s: float = 0.0
    spot_notice_s: float = 120.0
    deadline_aware: bool = False

    @property
    def grace_s(self) -> float:
        """terminationGracePeriodSeconds as the chart derives it: ceil(drain) + NATS drain + safety."""
        return math.ceil(self.drain_timeout_s) + self.nats_drain_margin_s + self.safety_margin_s


# The chart's worker.autoscaling.utilisation.target and scaleDown.tolerance (values.yaml).
UTILISATION_TARGET = 0.8
HPA_TOLERANCE = 0.2
CLUSTER_TOLERANCE = 0.1  # the HPA's default (--horizontal-pod-autoscaler-tolerance)


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str  # sigkill | nats_restart | ingest_restart | node_kill | evict | spot


def schedule(s: Settings, rng: random.Random) -> list[Fault]:
    """Faults at seeded random times inside the load. SIGKILLs come every kill_every_s on average
    (uniform 0.5x-1.5x gaps, at least one); each restart (and node kill) gets its own slice of the
    middle 70% of the load, kept 10 s away from the other kinds so their effects can be told apart.
    Without node kills the schedule is the same as before they existed (same seed, same faults).
    Evictions come at gaps of 0.6x-1.0x evict_every_s to the end of the load, so two are never
    further apart."""
    end = s.duration_s * 0.95
    faults: list[Fault] = []
    if s.kill_every_s > 0:
        t = rng.uniform(0.3, 1.0) * min(s.kill_every_s, s.duration_s * 0.5)
        while t < end:
            faults.append(Fault(t, "sigkill"))
            t += rng.uniform(0.5, 1.5) * s.kill_every_s
    restarts: list[Fault] = []
    kinds = (
        ("nats_restart", s.nats_restarts),
        ("ingest_restart", s.ingest_restarts),
        ("node_kill", s.node_kills),
    )
    for kind, count in kinds:
        for i in range(count):
            lo = s.duration_s * (0.15 + 0.7 * i / count)
            hi = s.duration_s * (0.15 + 0.7 * (i + 1) / count)
            t = rng.uniform(lo, hi)
            for _ in range(50):
                if all(abs(t - f.at_s) >= 10 for f in restarts):
                    break
                t = rng.uniform(lo, hi)
            restarts.append(Fault(t, kind))
    if s.evict_every_s > 0:  # drawn last: the other faults' times do not move with it
        t = rng.uniform(0.6, 1.0) * s.evict_every_s
        while t < s.duration_s:
            faults.append(Fault(t, "evict"))
            t += rng.uniform(0.6, 1.0) * s.evict_every_s
    if s.spot_every_s > 0:  # drawn after the evictions: they do not move with it
        t = rng.uniform(0.3, 1.0) * s.spot_every_s
        while t < s.duration_s:
            faults.append(Fault(t, "spot"))
            t += rng.uniform(0.5, 1.5) * s.spot_every_s
    return sorted(faults + restarts, key=lambda f: f.at_s)


# Option defaults per profile (`orderflow chaos --profile NAME`); an option given on the command line
# wins. Durations in seconds.
PROFILES: dict[str, dict[str, Any]] = {
    # The seed's sine against long external calls, many longer than the drain (docs/chaos.md).
    "default": {
        "duration": 1200.0,
        "peak_rps": 60.0,
        "period": 300.0,
        "work_s": parse_work("1-30"),
        "min_workers": 1,
        "max_workers": 6,
        "concurrency": 100,
        "ack_wait_s": 30.0,
        "drain_timeout_s": 20.0,
        "max_deliver": 10,
        "max_crashes": 10,
        "kill_every_s": 120.0,
        "evict_every_s": 0.0,
        "nats_restarts": 1,
        "ingest_restarts": 1,
        "hpa_sync": 5.0,
        "scale_down_window": 30.0,
        "scale_down_pods": 1,
        "scale_down_period": 10.0,
    },
    # Issue #10: jobs far longer than the drain budget (20-90 s against a 2 s drain), a SIGTERM at
    # least every 15 s (the HPA's scale-downs, and pod evictions planned at most 14 s apart: a late
    # tick still keeps them inside 15 s), SIGKILLs, one NATS restart. Run it with --checkpoints off
    # too: the work redone either way.
    "long-jobs": {
        "duration": 720.0,
        "peak_rps": 1.5,
        "period": 240.0,
        "work_s": parse_work("20-90"),
        "min_workers": 1,
        "max_workers": 6,
        "concurrency": 16,
        "ack_wait_s": 10.0,
        "drain_timeout_s": 2.0,
        "max_deliver": 5,
        "max_crashes": 10,
        "kill_every_s": 30.0,
        "evict_every_s": 14.0,
        "nats_restarts": 1,
        "ingest_restarts": 0,
        "hpa_sync": 5.0,
        "scale_down_window": 30.0,
        "scale_down_pods": 1,
        "scale_down_period": 10.0,
    },
    # Issue #25: the platform grants less than the derived grace. The sine (two periods) of
    # 5-40 s jobs against a 20 s drain (so a 30 s derived grace); every scale-down's grace drawn
    # between 2 s and 30 s, a spot notice every 45 s or so (the node gone 40 s later: 120 s x
    # 20/60, the drain against the chart's default 60 s), an eviction at most every 30 s; no
    # other faults, so every crash is a short grace's. Run it with --deadline-aware off too.
    "platform-deadlines": {
        "duration": 240.0,
        "peak_rps": 3.0,
        "period": 120.0,
        "work_s": parse_work("5-40"),
        "min_workers": 1,
        "max_workers": 6,
        "concurrency": 16,
        "ack_wait_s": 10.0,
        "drain_timeout_s": 20.0,
        "max_deliver": 5,
        "max_crashes": 10,
        "kill_every_s": 0.0,
        "evict_every_s": 30.0,
        "nats_restarts": 0,
        "ingest_restarts": 0,
        "hpa_sync": 5.0,
        "scale_down_window": 20.0,
        "scale_down_pods": 1,
        "scale_down_period": 10.0,
        "short_grace": True,
        "spot_every_s": 45.0,
        "deadline_aware": True,
    },
}

# The chart's default drain budget: a spot notice's two minutes are scaled by drain / this.
CHART_DRAIN_S = 60.0
SPOT_NOTICE_S = 120.0
