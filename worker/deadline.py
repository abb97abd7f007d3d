"""The drain's real deadline: what the platform grants, read from this worker's own pod.

The chart derives terminationGracePeriodSeconds from the drain budget, but a pod is often deleted
with less: `kubectl delete --grace-period=N`, the eviction API with its own grace, a spot node's
two-minute notice, a node's graceful-shutdown budget. The kubelet SIGKILLs at the end of that grace
whatever the worker's budget says, and a job still running then is a crash (work lost since its
last checkpoint, a crash on its books, and its order waits for its lease to lapse).

So on SIGTERM, inside a cluster, the worker reads its own pod (the one client it has, worker/kube.py)
for `metadata.deletionTimestamp` and `deletionGracePeriodSeconds`, and drains against the sooner
of its budget and the SIGKILL time less a margin (worker/timing.py `drain_deadline`, with the
arithmetic). A `DisruptionTarget` condition (an eviction, a node shutdown, a preemption) is logged
with its reason. Outside a cluster, with ORDERFLOW_POD_DEADLINE=off, when the pod is not being
deleted (a local `kill -TERM`), or when the read does not answer within READ_TIMEOUT_S, the budget
stands; the drain's log line says which deadline ruled and why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orderflow.config import Settings
from worker.kube import TOKEN_PATH, PodClient, in_cluster, short
from worker.timing import DrainDeadline, Timing

log = logging.getLogger(__name__)

# The drain cannot wait longer for the pod: a 2 s grace leaves little else.
READ_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class PodDeletion:
    deletion_at: float | None  # epoch s: metadata.deletionTimestamp
    grace_s: float | None  # metadata.deletionGracePeriodSeconds
    disruption: str | None  # the reason of a DisruptionTarget condition, if any


def deletion_of(pod: Any) -> PodDeletion:
    """What a V1Pod says of its deletion."""
    meta = pod.metadata
    stamp = getattr(meta, "deletion_timestamp", None) if meta is not None else None
    grace = getattr(meta, "deletion_grace_period_seconds", None) if meta is not None else None
    conditions = (pod.status.conditions if pod.status is not None else None) or []
    disruption = next(
        (c.reason or "unknown" for c in conditions if c.type == "DisruptionTarget" and c.status == "True"),
        None,
    )
    return PodDeletion(
        stamp.timestamp() if stamp is not None else None,
        float(grace) if grace is not None else None,
        disruption,
    )


class DeadlineReader:
    """Reads this pod's deletion at SIGTERM; `None` pod: the budget always stands (`why_not`)."""

    def __init__(self, pod: PodClient | None, why_not: str = "") -> None:
        self.pod = pod
        self.why_not = why_not

    @classmethod
    def from_settings(
        cls, settings: Settings, shared: PodClient | None = None, token_path: Path = TOKEN_PATH
    ) -> DeadlineReader:
        """`shared`: the pod-deletion-cost keeper's client, when it has one (one client per pod)."""
        mode = settings.pod_deadline
        if mode == "off":
            return cls(None, "ORDERFLOW_POD_DEADLINE=off")
        if mode == "auto" and not in_cluster(settings, token_path):
            return cls(None, "not in a Kubernetes pod")
        pod = shared or PodClient.from_settings(settings, token_path)
        if pod is None:
            return cls(None, "ORDERFLOW_POD_NAME / ORDERFLOW_POD_NAMESPACE not set")
        return cls(pod)

    async def prepare(self) -> None:
        """Build the client now, at start-up: importing `kubernetes` and loading its config take
        about a second, which the read at SIGTERM cannot spare."""
        if self.pod is None:
            return
        try:
            await asyncio.to_thread(self.pod.core)
        except Exception as exc:
            log.warning("pod deadline: no Kubernetes client (%s); drains keep their budget", short(exc))

    async def deadline(self, timing: Timing, sigterm_at: float) -> tuple[DrainDeadline, str]:
        """The drain's deadline and, for the log, why it is that one. `sigterm_at`: monotonic."""
        if self.pod is None:
            return timing.drain_deadline(None), self.why_not
        try:
            pod = await self.pod.read(READ_TIMEOUT_S)
        except Exception as exc:
            why = f"pod {self.pod.namespace}/{self.pod.name} not read: {short(exc)}"
            return timing.drain_deadline(None), why
        deletion = deletion_of(pod)
        since = time.monotonic() - sigterm_at
        kill_in = Timing.kill_in_s(deletion.deletion_at, deletion.grace_s, time.time(), since)
        deadline = timing.drain_deadline(kill_in, since)
        if kill_in is None:
            why = "the pod is not being deleted"
        else:
            why = f"pod deleted with a {deletion.grace_s or 0:g}s grace, SIGKILL in {kill_in:.1f}s"
        if deletion.disruption is not None:
            why += f", DisruptionTarget {deletion.disruption}"
        return deadline, why
