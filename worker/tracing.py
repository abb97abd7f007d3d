"""Each run of an order as a consumer span of the order's one trace, as a hook on the job's life
(worker/hooks.py). Imported only when tracing is on (orderflow/tracing.py): it imports
OpenTelemetry through orderflow/otel.py.

The run's parent is the context in the order's headers (the ingest's producer span); every copy of
the order (a scheduled retry, a DLQ copy, its replay) keeps those headers, so every run of it, on
any pod, joins the same trace. A run whose worker was SIGKILLed never ends its span (it is never
exported); the run after it records the crash as an event with the time lost."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span

from orderflow import contract
from orderflow.otel import RUN_SPAN, Tracer
from worker.delivery import Delivery, Kind
from worker.hooks import Hook

# the run's outcome as the trace shows it ("crashed" is written by the run after a crash)
OUTCOMES = {
    Kind.DONE: "done",
    Kind.ALREADY_DONE: "done",
    Kind.HANDED_BACK: "handed back",
    Kind.UNSTARTED: "handed back",
    Kind.RETRY: "failed",
    Kind.TIMEOUT: "failed",
    Kind.SLOT_CRASHED: "failed",
    Kind.POISON: "dead",
    Kind.DEAD: "dead",
    Kind.CANCELLED: "cancelled",
    Kind.ALREADY_CANCELLED: "cancelled",
}
# outcomes decided before a run starts that still get a span: the order ends here (a DLQ copy)
_UNSTARTED_SPANS = frozenset({Kind.DEAD, Kind.POISON})


class TracingHook(Hook):
    def __init__(self, tracer: Tracer, worker_id: str, consumer: str) -> None:
        self._tracer = tracer
        self._worker_id = worker_id
        self._consumer = consumer
        self._spans: dict[int, Span] = {}
        self._settled: dict[str, str] | None = None  # the trace of the run that just settled
        self._lost: dict[int, float] = {}

    def _open(self, d: Delivery, start_s: float) -> Span:
        def attributes() -> dict[str, Any]:  # only for a run the sampler keeps
            return {
                "messaging.message.id": d.order_id,
                "messaging.consumer.group.name": self._consumer,
                "messaging.message.delivery_count": d.deliveries,
                "orderflow.order.id": d.order_id,
                "orderflow.worker": self._worker_id,
                "orderflow.failed_attempts": d.books.failed,
                "orderflow.queue_s": max(0.0, start_s - d.meta.published_at),
            }

        span = self._tracer.consumer(
            contract.SUBJECT_PREFIX + d.task_type, d.msg.headers, start_s, attributes
        )
        lost_s = self._lost.pop(id(d), None)
        if lost_s is not None:
            span.add_event(
                "previous run crashed",
                {"orderflow.lost_s": lost_s, "orderflow.crashes": d.books.crashes},
            )
        return span

    def crash_found(self, d: Delivery, lost_s: float) -> None:
        self._lost[id(d)] = lost_s

    def started(self, d: Delivery) -> None:
        span = self._spans[id(d)] = self._open(d, d.run_started or d.started_at)
        RUN_SPAN.set(span)  # in the job's own task: its log lines carry the span's ids

    def draining(self, hand_back_in_s: float) -> None:
        for span in self._spans.values():
            span.add_event("hand-back notice", {"orderflow.hand_back_in_s": round(hand_back_in_s, 3)})

    def checkpointed(self, d: Delivery) -> None:
        span = self._spans.get(id(d))
        if span is not None:
            span.add_event("checkpoint")

    def exemplar(self) -> dict[str, str] | None:
        return self._settled

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        self._settled = None
        span = self._spans.pop(id(d), None)
        RUN_SPAN.set(None)
        if span is None:
            if kind not in _UNSTARTED_SPANS:
                self._lost.pop(id(d), None)
                return
            span = self._open(d, d.started_at)
        if not span.is_recording():  # dropped by the sampler: nothing to record
            return
        self._settled = {"trace_id": f"{span.get_span_context().trace_id:032x}"}
        outcome = OUTCOMES.get(kind, kind.value)
        span.set_attribute("orderflow.outcome", outcome)
        span.set_attribute("orderflow.kind", kind.value)
        if kind is Kind.RETRY or kind is Kind.TIMEOUT:
            span.add_event("retry scheduled")
        elif kind in _UNSTARTED_SPANS:
            span.add_event("copied to the DLQ")
        if outcome in ("failed", "dead"):
            self._tracer.failed(span, kind.value)
        span.end()
