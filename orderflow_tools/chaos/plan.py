"""What a rehearsal does and when: its settings, and the seeded schedule of faults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from orderflow.config import WorkRange


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
    restart_delay_s: float = 1.0  # the kubelet restarts a killed container after this
    nats_drain_margin_s: float = 5.0  # as the chart's worker.termination
    safety_margin_s: float = 5.0
    # On a local JetStream cluster of this many nodes (0: one nats-server), with R3 streams;
    # node_kills SIGKILLs of the ORDERS stream leader's node, each started again node_down_s later.
    nats_cluster: int = 0
    node_kills: int = 0
    node_down_s: float = 10.0

    @property
    def grace_s(self) -> float:
        """terminationGracePeriodSeconds as the chart derives it: ceil(drain) + NATS drain + safety."""
        return math.ceil(self.drain_timeout_s) + self.nats_drain_margin_s + self.safety_margin_s


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str  # sigkill | nats_restart | ingest_restart | node_kill


def schedule(s: Settings, rng: random.Random) -> list[Fault]:
    """Faults at seeded random times inside the load. SIGKILLs come every kill_every_s on average
    (uniform 0.5x-1.5x gaps, at least one); each restart (and node kill) gets its own slice of the
    middle 70% of the load, kept 10 s away from the other kinds so their effects can be told apart.
    Without node kills the schedule is the same as before they existed (same seed, same faults)."""
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
    return sorted(faults + restarts, key=lambda f: f.at_s)
