"""Kubernetes' scaling decisions, replayed: the HorizontalPodAutoscaler's replica count and the
ReplicaSet's choice of which pod a scale-down deletes.

HPA (autoscaling/v2, an External metric with an AverageValue target):
- desired = ceil(backlog / target_per_pod), unless backlog / (current * target) is within the
  tolerance (10%) of 1, then current; clamped to [min, max].
- scale-up: no stabilization; at most max(4 pods, 100%) more per scale-up period (the defaults).
- scale-down: the highest recommendation of the stabilization window wins (so a short dip does
  not remove pods), and a policy removes at most N pods per period.

ReplicaSet (controller.getPodsToDelete / ActivePodsWithRanks): delete first the pod that is
not ready, then the one with the lowest `controller.kubernetes.io/pod-deletion-cost`, then the one
ready for the shortest time, then the one with more restarts, then the newest. In a cluster the
worker keeps the annotation itself (worker/kube.py: idle 0, busy 100); here the cost is derived
from what the worker reports on /metrics (orderflow_tasks_in_flight), with the same mapping.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from orderflow_tools.chaos.procs import Pod

IDLE_COST, BUSY_COST = 0, 100  # as worker/kube.py patches them


@dataclass(frozen=True)
class HpaPolicy:
    min_replicas: int
    max_replicas: int
    target_per_pod: float  # backlog (pending + ack pending) one pod should carry: its slots
    sync_period_s: float = 15.0
    tolerance: float = 0.1
    scale_down_window_s: float = 300.0
    scale_down_pods: int = 1
    scale_down_period_s: float = 15.0
    scale_up_pods: int = 4
    scale_up_period_s: float = 15.0


class Autoscaler:
    def __init__(self, policy: HpaPolicy) -> None:
        self.policy = policy
        self._recommendations: deque[tuple[float, int]] = deque()
        self._changes: deque[tuple[float, int]] = deque()  # (time, replicas added (+) / removed (-))

    def desired(self, now: float, current: int, backlog: float) -> int:
        """The replica count for this sync, given the current count and the metric."""
        p = self.policy
        if current > 0 and abs(backlog / (current * p.target_per_pod) - 1.0) <= p.tolerance:
            raw = current
        else:
            raw = math.ceil(backlog / p.target_per_pod)
        raw = max(p.min_replicas, min(p.max_replicas, raw))
        self._recommendations.append((now, raw))
        while self._recommendations and self._recommendations[0][0] < now - p.scale_down_window_s:
            self._recommendations.popleft()
        if raw > current:
            added = sum(n for t, n in self._changes if n > 0 and t > now - p.scale_up_period_s)
            limit = max(p.scale_up_pods, current) - added  # max(4 pods, 100%) per period
            target = min(raw, current + max(0, limit))
        elif raw < current:
            stabilized = max(n for _, n in self._recommendations)
            removed = -sum(n for t, n in self._changes if n < 0 and t > now - p.scale_down_period_s)
            target = max(stabilized, current - max(0, p.scale_down_pods - removed))
            target = min(target, current)
        else:
            target = current
        if target != current:
            self._changes.append((now, target - current))
        while self._changes and self._changes[0][0] < now - max(p.scale_down_period_s, p.scale_up_period_s):
            self._changes.popleft()
        return target


def deletion_cost(pod: Pod) -> int:
    """The pod-deletion-cost the worker would have patched onto its pod: busy pods cost more."""
    return BUSY_COST if pod.in_flight > 0 else IDLE_COST


def _rank(pod: Pod, now: float) -> tuple[int, int, float, int, float]:
    ready = pod.phase == "running" and pod.ready
    ready_for = (now - pod.ready_since) if ready and pod.ready_since is not None else 0.0
    # Sort ascending = delete first: not ready, low cost, short readiness, many restarts, new.
    return (1 if ready else 0, deletion_cost(pod), ready_for, -pod.restarts, -pod.created_at)


def pick_victims(pods: Sequence[Pod], count: int, now: float) -> list[Pod]:
    """The `count` pods a ReplicaSet scale-down deletes, among the pods not already terminating."""
    candidates = [p for p in pods if p.phase in ("running", "restarting")]
    return sorted(candidates, key=lambda p: _rank(p, now))[:count]
