"""Cross-cutting concerns of the job path (metrics, the pod's load) as hooks: the pipeline calls
every hook at fixed points of a job's life, "before" calls in order and "after" calls in reverse
(dramatiq's middleware, much smaller). A worker has a tuple of hooks; there is no registry."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orderflow.config import Settings
from orderflow.logformat import ORDER_ID
from orderflow.metrics import WorkerMetrics
from worker.delivery import FAILED, Delivery, Kind

if TYPE_CHECKING:
    from orderflow.otel import Tracer  # OpenTelemetry: imported only when tracing is on


class Hook:
    """A no-op hook; subclasses override what they need."""

    def started(self, d: Delivery) -> None:
        """The handler is about to run."""

    def checkpointed(self, d: Delivery) -> None:
        """The handler stored a checkpoint."""

    def crash_found(self, d: Delivery, lost_s: float) -> None:
        """This delivery found that the order's previous run died (its worker was killed)."""

    def adopted(self, d: Delivery) -> None:
        """The message of a job running here came again; the running job keeps it."""

    def heartbeat(self, d: Delivery) -> None:
        """An in_progress was sent for the job."""

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        """The delivery ended (after hook: called in reverse order)."""

    def draining(self, hand_back_in_s: float) -> None:
        """The worker drains: a job still running in `hand_back_in_s` is handed back."""

    def exemplar(self) -> dict[str, str] | None:
        """The trace of the run whose `settled` this hook has just heard, if it was traced: the
        exemplar of the run's duration (MetricsHook, whose `settled` comes after in reverse order)."""
        return None

    def crashed(self, where: str) -> None:
        """A slot or a fetch loop died of an unexpected error and was restarted."""


class Hooks:
    __slots__ = ("_after", "_before")

    def __init__(self, *hooks: Hook) -> None:
        self._before = hooks
        self._after = tuple(reversed(hooks))

    def started(self, d: Delivery) -> None:
        for h in self._before:
            h.started(d)

    def checkpointed(self, d: Delivery) -> None:
        for h in self._before:
            h.checkpointed(d)

    def crash_found(self, d: Delivery, lost_s: float) -> None:
        for h in self._before:
            h.crash_found(d, lost_s)

    def adopted(self, d: Delivery) -> None:
        for h in self._before:
            h.adopted(d)

    def heartbeat(self, d: Delivery) -> None:
        for h in self._before:
            h.heartbeat(d)

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        for h in self._after:
            h.settled(d, kind, seconds)

    def draining(self, hand_back_in_s: float) -> None:
        for h in self._before:
            h.draining(hand_back_in_s)

    def crashed(self, where: str) -> None:
        for h in self._after:
            h.crashed(where)


_DONE = frozenset({Kind.DONE, Kind.ALREADY_DONE})
_ERROR = FAILED | {Kind.DEAD}


class MetricsHook(Hook):
    """The worker's metrics (orderflow/metrics.py). Metric children are resolved once: labels() takes a lock and
    builds a tuple per call."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        task_type: str,
        exemplar: Callable[[], dict[str, str] | None] | None = None,
    ) -> None:
        self._m = metrics
        self._exemplar = exemplar  # a tracing hook's (listed after this one): the run's trace id
        self._durations = {k: metrics.task_duration.labels(task_type, k.value) for k in Kind}
        self._done = metrics.work_done.labels("done")
        self._error = metrics.work_done.labels("error")
        self._lost = {c: metrics.work_redone.labels(c) for c in ("handback", "crash")}

    def started(self, d: Delivery) -> None:
        self._m.attempts.observe(d.deliveries)
        if d.meta.delivered > 1:
            self._m.redeliveries.inc()

    def checkpointed(self, d: Delivery) -> None:
        self._m.checkpoints.inc()

    def crash_found(self, d: Delivery, lost_s: float) -> None:
        self._m.crashes.inc()
        self._lost["crash"].inc(lost_s)

    def adopted(self, d: Delivery) -> None:
        self._m.redeliveries.inc()

    def heartbeat(self, d: Delivery) -> None:
        self._m.heartbeats.inc()

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        self._durations[kind].observe(seconds, None if self._exemplar is None else self._exemplar())
        if kind in _DONE:
            self._done.inc()
            if kind is Kind.ALREADY_DONE:
                self._m.deduplicated.inc()
        elif kind in _ERROR:
            self._error.inc()
            if kind is Kind.DEAD or kind is Kind.POISON:  # both copied to the DLQ
                self._m.dead_letters.inc()
        elif kind is Kind.HANDED_BACK or kind is Kind.UNSTARTED:
            self._m.handed_back.inc()
            if kind is Kind.HANDED_BACK:
                self._lost["handback"].inc(at_stake_s(d, time.time()))
        elif kind is Kind.CANCELLED:
            self._m.cancelled.inc()
        elif kind is Kind.ALREADY_CANCELLED:
            self._m.deduplicated.inc()

    def crashed(self, where: str) -> None:
        self._m.slot_restarts.labels(where).inc()


def at_stake_s(d: Delivery, now: float) -> float:
    """Seconds of this job's work that a kill now would throw away: since its last checkpoint, or
    since it started."""
    if d.run_started is None:
        return 0.0
    return max(0.0, now - max(d.run_started, d.books.checkpoint_at or 0.0))


class LogContext(Hook):
    """ORDERFLOW_LOG_FORMAT=json: the log lines of a run carry its order id (the job's task keeps
    the context variable; orderflow/logformat.py reads it)."""

    def started(self, d: Delivery) -> None:
        ORDER_ID.set(d.order_id)

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        ORDER_ID.set(None)


class PodLoad(Hook):
    """The work this worker has at stake, for its pod-deletion-cost (worker/kube.py): the sum over
    running jobs of the seconds since each one's last checkpoint. `on_change` hears the new cost
    whenever a job starts, checkpoints or ends."""

    def __init__(self) -> None:
        self._running: dict[int, Delivery] = {}
        self.on_change: Callable[[int], None] | None = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self.cost())

    def started(self, d: Delivery) -> None:
        self._running[id(d)] = d
        self._changed()

    def checkpointed(self, d: Delivery) -> None:
        self._changed()

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        if self._running.pop(id(d), None) is not None:
            self._changed()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def at_stake_s(self, now: float | None = None) -> float:
        t = time.time() if now is None else now
        return sum(at_stake_s(d, t) for d in self._running.values())

    def cost(self) -> int:
        """The deletion cost: 0 when idle; else the seconds at stake rounded down to a power of two
        (at least 1), so the annotation changes a few times an hour, not every second."""
        if not self._running:
            return 0
        seconds = self.at_stake_s()
        return 1 if seconds < 2 else min(2**31 - 1, 2 ** int(math.log2(seconds)))


def exemplar_of(hooks: tuple[Hook, ...]) -> Callable[[], dict[str, str] | None] | None:
    """The exemplar source among `hooks` (a tracing hook), for MetricsHook; None when none is."""
    return next((h.exemplar for h in hooks if type(h).exemplar is not Hook.exemplar), None)


def context_hooks(settings: Settings, tracer: Tracer | None, consumer: str) -> tuple[Hook, ...]:
    """The hooks that lead from logs and traces to the order, only where they are asked for."""
    logs = (LogContext(),) if settings.log_format == "json" else ()
    if tracer is None:
        return logs
    from worker.tracing import TracingHook  # imports OpenTelemetry: only when tracing is on

    return (*logs, TracingHook(tracer, settings.worker_id, consumer))
