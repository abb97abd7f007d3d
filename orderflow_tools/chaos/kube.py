"""Kubernetes' scaling decisions, replayed: the HorizontalPodAutoscaler's replica count and the
ReplicaSet's choice of which pod a scale-down deletes.

HPA (autoscaling/v2, an External metric with an AverageValue target):
- the metric: the backlog (the consumer's pending + ack pending), or, as the chart's autoscaling
  renders it since issue #14 (KEDA scalingModifiers `max(lag, running)`, or the plain HPA's two
  metrics), the larger of the backlog and the running jobs over the utilisation target
  (`utilisation.target`, 0.8: a pod is asked to keep a fifth of its slots free);
- desired = ceil(metric / target_per_pod), unless metric / (current * target) is within the
  tolerance of 1 (the chart's 0.2 on Kubernetes >= 1.35, the cluster default 0.1 before), then
  current; clamped to [min, max].
- scale-up: no stabilization; at most max(4 pods, 100%) more per scale-up period (the defaults).
- scale-down: the highest recommendation of the stabilization window wins (so a short dip does
  not remove pods), and a policy removes at most N pods per period.

ReplicaSet (controller.getPodsToDelete / ActivePodsWithRanks.Less, LogarithmicScaleDown on as since
Kubernetes 1.22): delete first the pod that is not ready, then the one with the lowest
`controller.kubernetes.io/pod-deletion-cost`, then the one ready for the shorter time, then the one
with more restarts, then the newer. Both times are compared in log2 buckets of nanoseconds (about
1 s, 2 s, 4 s, ... ago): two pods ready (or created) in the same bucket go by UID, i.e. at random; and a
time is the API's, to the second. One node, so the "doubled up" rule never applies.

The annotation is what the worker keeps on its pod (worker/kube.py): the work a kill would lose, as
it exports it on /metrics (`orderflow_pod_deletion_cost`: 0 idle, else seconds since each job's last
checkpoint, summed and rounded down to a power of two). The replay scrapes it and applies it as the
worker's keeper patches it: only a change, at most once per `min_interval_s` per pod. `busy` mode
emulates the worker before issue #14 (idle 0, busy 100) from `orderflow_tasks_in_flight`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Literal

from orderflow_tools.chaos.procs import Pod

IDLE_COST, BUSY_COST = 0, 100  # `busy` mode: as worker/kube.py patched them before issue #14


@dataclass(frozen=True)
class HpaPolicy:
    min_replicas: int
    max_replicas: int
    target_per_pod: float  # backlog (pending + ack pending) one pod should carry: its slots
    sync_period_s: float = 15.0
    tolerance: float = 0.1
    # The utilisation signal's target (running jobs / slots), None: the backlog alone (before #14).
    utilisation_target: float | None = None
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

    def desired(self, now: float, current: int, backlog: float, running: float = 0.0) -> int:
        """The replica count for this sync, given the current count, the backlog and the jobs
        running on the pods Prometheus scrapes."""
        p = self.policy
        metric = backlog
        if p.utilisation_target is not None:
            metric = max(backlog, running / p.utilisation_target)
        if current > 0 and abs(metric / (current * p.target_per_pod) - 1.0) <= p.tolerance:
            raw = current
        else:
            raw = math.ceil(metric / p.target_per_pod)
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


CostMode = Literal["work", "busy"]


def wanted_cost(pod: Pod, mode: CostMode) -> int:
    """The pod-deletion-cost the worker's keeper wants on its pod, from its last scrape."""
    if mode == "busy":
        return BUSY_COST if pod.in_flight > 0 else IDLE_COST
    return int(pod.metrics.get("orderflow_pod_deletion_cost", IDLE_COST))


def keep_annotation(pod: Pod, now: float, mode: CostMode, min_interval_s: float) -> None:
    """What worker/kube.py's keeper does to the annotation: patch a changed cost, at most once per
    min_interval_s. Call after each fresh scrape of a live container (a dead one patches nothing;
    the annotation outlives a container restart, as it outlives it on the pod)."""
    cost = wanted_cost(pod, mode)
    if cost != pod.cost and now - pod.cost_patched_at >= min_interval_s:
        pod.cost, pod.cost_patched_at = cost, now


def _bucket(seconds_ago: float) -> int:
    """logarithmicRankDiff's rank: floor(log2(nanoseconds)), -1 for now or the future."""
    ns = seconds_ago * 1e9
    return int(math.log2(ns)) if ns > 0 else -1


def _earlier(a: Pod, b: Pod, now: float) -> int:
    """ActivePodsWithRanks.Less as a comparison: < 0 when `a` goes first."""
    a_ready, b_ready = a.phase == "running" and a.ready, b.phase == "running" and b.ready
    if a_ready != b_ready:
        return -1 if not a_ready else 1  # 3. not ready first
    if a.cost != b.cost:
        return -1 if a.cost < b.cost else 1  # 4. lower deletion cost first
    if a_ready and b_ready:  # 6. ready for the shorter time first, in log2 buckets
        ta, tb = math.floor(a.ready_since or 0.0), math.floor(b.ready_since or 0.0)
        if ta != tb:
            diff = _bucket(now - ta) - _bucket(now - tb)
            return diff if diff else (-1 if a.uid < b.uid else 1)
    if a.restarts != b.restarts:
        return -1 if a.restarts > b.restarts else 1  # 7. more restarts first
    ca, cb = math.floor(a.created_at), math.floor(b.created_at)
    if ca != cb:  # 8. newer first, in log2 buckets
        diff = _bucket(now - ca) - _bucket(now - cb)
        return diff if diff else (-1 if a.uid < b.uid else 1)
    return 0


def pick_victims(pods: Sequence[Pod], count: int, now: float) -> list[Pod]:
    """The `count` pods a ReplicaSet scale-down deletes, among the pods not already terminating."""
    candidates = [p for p in pods if p.phase in ("running", "restarting")]

    def earlier(a: Pod, b: Pod) -> int:
        return _earlier(a, b, now)

    return sorted(candidates, key=cmp_to_key(earlier))[:count]
