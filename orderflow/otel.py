"""OpenTelemetry, imported only when tracing is on (orderflow/tracing.py decides): the provider
from the standard OTEL_* variables (exporter and protocol, sampler, resource, batch settings), and
the spans both services share, named by the OpenTelemetry messaging conventions.

The trace context travels by hand in the order's NATS headers (`traceparent`, `tracestate`): the
third-party nats-py instrumentation patches `Client.publish`, which orderflow uses for every ack,
heartbeat and KV write, and would make a span of each."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderflow import logformat
from orderflow.tracing import TRACEPARENT, TRACESTATE

_TRACE_HEADERS = {TRACEPARENT.encode(): TRACEPARENT, TRACESTATE.encode(): TRACESTATE}


class TracingConfigError(ValueError):
    pass


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise TracingConfigError(f"OTEL_TRACES_EXPORTER={name!r}: orderflow supports otlp, console or none")
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    raise TracingConfigError(f"OTLP protocol {protocol!r}: orderflow supports http/protobuf or grpc")


class _PresetIds(RandomIdGenerator):
    """The SDK's random ids, except the trace id the server wrapper decided a request's sampling
    on: a root span would otherwise draw another one, and the ratio sampler decide again on it."""

    def __init__(self) -> None:
        self.preset = 0

    def generate_trace_id(self) -> int:
        preset, self.preset = self.preset, 0
        return preset or super().generate_trace_id()


# The context a request the sampler dropped hands to its order, in place of a span: the headers
# (`traceparent` with the sampled flag clear, `tracestate`) that make every run drop its span too.
# A dropped request makes no span object and attaches no OpenTelemetry context (the cost of those,
# under load, was most of what tracing at a ratio cost: docs/observability.md "What it costs").
_DROPPED: ContextVar[dict[str, str] | None] = ContextVar("orderflow_dropped_trace", default=None)
_ROOT = Context()


class Tracer:
    def __init__(self, provider: TracerProvider, ids: _PresetIds | None = None) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("orderflow")
        self.ids = ids or _PresetIds()
        self.sampler = provider.sampler
        # parent-based with its default for a remote parent not sampled (drop): that parent's flag
        # alone decides, and a run of an order whose request was dropped asks no sampler
        description = self.sampler.get_description()
        self.parent_decides = description.startswith("ParentBased{") and (
            "remoteParentNotSampled:AlwaysOffSampler" in description
        )

    @classmethod
    def from_environment(cls, service: str, instance: str, env: Mapping[str, str]) -> Tracer:
        """The SDK reads the sampler (OTEL_TRACES_SAMPLER, _ARG), the exporter's endpoint, headers
        and timeouts and the batch settings (OTEL_BSP_*) from the environment itself."""
        attributes: dict[str, Any] = {"service.instance.id": instance}
        if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes["service.name"] = service
        ids = _PresetIds()
        provider = TracerProvider(resource=Resource.create(attributes), id_generator=ids)
        processor: SpanProcessor = BatchSpanProcessor(_exporter(env))
        provider.add_span_processor(processor)
        logformat.current_trace = _current_ids  # JSON log lines carry the current span's ids
        return cls(provider, ids)

    def shutdown(self) -> None:
        """Export what is left (the provider also does it at exit)."""
        self.provider.shutdown()

    @staticmethod
    def failed(span: Span, description: str) -> None:
        span.set_status(StatusCode.ERROR, description)

    def server(self, app: ASGIApp, route: str) -> ASGIApp:
        """`app` (the POST /orders endpoint) inside a server span, the client's trace continued;
        a request the sampler drops gets no span at all (_DROPPED)."""
        return _ServerSpans(app, self, route)

    @staticmethod
    def exemplar() -> dict[str, str] | None:
        """The current span's trace id, as the exemplar of a duration observed under it (shown by
        an OpenMetrics scrape), when it is sampled: never one of a trace that is not exported."""
        context = trace.get_current_span().get_span_context()
        return {"trace_id": f"{context.trace_id:032x}"} if context.trace_flags.sampled else None

    @staticmethod
    def carry_dropped(headers: dict[str, str]) -> bool:
        """Under a request the sampler dropped (most requests at a ratio): its not-sampled context
        into `headers`, and True (no producer span: the sampler would drop it too, parent-based or
        on the same trace id's ratio), so that every run of the order drops its span as well."""
        dropped = _DROPPED.get()
        if dropped is None:
            return False
        headers.update(dropped)
        return True

    @contextmanager
    def producer(
        self, destination: str, order_id: str | None, headers: dict[str, str], count: int = 1
    ) -> Iterator[Span]:
        """The publish of an order (or an atomic batch of `count`, `order_id` None) and its PubAck
        wait, as a producer span; its context goes into `headers`, so every run of the order (on
        any pod) is its child."""
        if self.carry_dropped(headers):
            yield INVALID_SPAN
            return
        attributes: dict[str, Any] = {
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": destination,
        }
        if order_id is not None:
            trace.get_current_span().set_attribute("orderflow.order.id", order_id)
            attributes["messaging.message.id"] = attributes["orderflow.order.id"] = order_id
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        with self.tracer.start_as_current_span(
            f"send {destination}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            propagate.inject(headers)
            yield span

    def consumer(
        self,
        destination: str,
        headers: Mapping[str, str] | None,
        start_s: float,
        attributes: Callable[[], dict[str, Any]],
    ) -> Span:
        """A run of an order, started (not current: it ends in another callback). The sampler is
        asked first, on the order's context: a run it drops (the order's request was not sampled)
        is the order's context as a non-recording span (its trace id still leads log lines to the
        order's trace) and costs no span, no attributes and none of the SDK's span machinery."""
        remote = _remote_of(headers)
        if remote is None:  # a context only the W3C propagator reads (another version, a tracestate)
            parent = propagate.extract(
                {k: v for k, v in (headers or {}).items() if k in (TRACEPARENT, TRACESTATE)}
            )
            remote = trace.get_current_span(parent).get_span_context()
        elif not remote.is_valid:
            parent = _ROOT
        elif self.parent_decides and not remote.trace_flags.sampled:
            return NonRecordingSpan(remote)  # most runs at a ratio: the ingest's "not sampled" decides
        else:
            parent = trace.set_span_in_context(NonRecordingSpan(remote), _ROOT)
        name = f"process {destination}"
        trace_id = remote.trace_id if remote.is_valid else self.ids.generate_trace_id()
        if self.sampler.should_sample(parent, trace_id, name, SpanKind.CONSUMER).decision is Decision.DROP:
            return NonRecordingSpan(remote)
        if not remote.is_valid:
            self.ids.preset = trace_id  # an order stored untraced: a root, on the trace id sampled
        span = self.tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": destination,
                **attributes(),
            },
            start_time=int(start_s * 1e9),
        )
        self.ids.preset = 0
        return span


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _remote_of(headers: Mapping[str, str] | None) -> SpanContext | None:
    """The order's span context from its headers (invalid: none, a root), read here from the
    version-00 `traceparent` every orderflow ingest writes (a regex and three ints); None when
    only the W3C propagator can read it (another version, a `tracestate`)."""
    traceparent = headers.get(TRACEPARENT) if headers else None
    if headers is None or traceparent is None:
        return INVALID_SPAN_CONTEXT
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None or TRACESTATE in headers:
        return None
    trace_id, span_id, flags = match.groups()
    return SpanContext(int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16)))


def _root_bound(description: str) -> int | None:
    """The bound TraceIdRatioBased compares a root's trace id (its low 64 bits) with, for the
    standard samplers (a ratio, always on, always off; parent-based or not); None for any other
    (a root then asks the sampler). Read from the sampler's description: its root is private."""
    root = description.removeprefix("ParentBased{root:").split(",", 1)[0]
    if root == "AlwaysOnSampler":
        return TraceIdRatioBased.get_bound_for_rate(1.0)
    if root == "AlwaysOffSampler":
        return 0
    ratio = re.fullmatch(r"TraceIdRatioBased\{(.+)\}", root)
    return TraceIdRatioBased.get_bound_for_rate(float(ratio[1])) if ratio else None


# The run span of the job the current task runs (worker/tracing.py): it is not made the current
# span (it ends in a callback that may run in another task), so log lines find it here.
RUN_SPAN: ContextVar[Span | None] = ContextVar("orderflow_run_span", default=None)


def _current_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        run = RUN_SPAN.get()
        if run is None:
            dropped = _DROPPED.get()  # a dropped request's lines still carry its trace id
            if dropped is None:
                return None
            _, trace_id, span_id, _ = dropped[TRACEPARENT].split("-")
            return trace_id, span_id
        context = run.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class _ServerSpans:
    """The server span of POST /orders. The sampling is decided first, on the trace id the span
    would get (the client's, or one drawn here and handed to the SDK through _PresetIds): a
    dropped request then costs a draw and one header, never a span, a context attach or the SDK's
    span machinery. A root under a standard sampler (a ratio, always on or off) is decided here on
    the trace id's low 64 bits as TraceIdRatioBased decides it; anything else asks the sampler."""

    def __init__(self, app: ASGIApp, tracer: Tracer, route: str) -> None:
        self.app = app
        self.tracer = tracer.tracer
        self.ids = tracer.ids
        self.sampler = tracer.provider.sampler
        self.root_bound = _root_bound(self.sampler.get_description())
        self.random = self.ids.is_trace_id_random()
        self.root_flags = "02" if self.random else "00"  # not sampled; random trace id (W3C level 2)
        self.name = f"POST {route}"
        self.route = route
        self.attributes = {"http.request.method": "POST", "http.route": route}

    async def _dropped(self, scope: Scope, receive: Receive, send: Send, context: dict[str, str]) -> None:
        token = _DROPPED.set(context)
        try:
            await self.app(scope, receive, send)
        finally:
            _DROPPED.reset(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            header = _TRACE_HEADERS.get(name)
            if header is not None:
                carrier[header] = value.decode("latin-1")
        if not carrier and self.root_bound is not None:  # a root (most requests): decided here
            ids = os.urandom(24).hex()  # the trace id (32 hex digits), the span id (16)
            if int(ids[16:32], 16) >= self.root_bound:
                return await self._dropped(
                    scope, receive, send, {TRACEPARENT: f"00-{ids[:32]}-{ids[32:]}-{self.root_flags}"}
                )
            parent, remote, trace_id = _ROOT, INVALID_SPAN_CONTEXT, int(ids[:32], 16)
        else:
            # the client's context, or an empty one (a root): never the current context, whose
            # lookups (in the sampler too) were a good part of a dropped request's cost
            parent = propagate.extract(carrier) if carrier else _ROOT
            remote = trace.get_current_span(parent).get_span_context() if carrier else INVALID_SPAN_CONTEXT
            trace_id = remote.trace_id if remote.is_valid else self.ids.generate_trace_id()
            sampling = self.sampler.should_sample(
                parent, trace_id, self.name, SpanKind.SERVER, self.attributes
            )
            if sampling.decision is Decision.DROP:
                flags = 2 if (remote.trace_flags.random_trace_id if remote.is_valid else self.random) else 0
                dropped = {TRACEPARENT: f"00-{trace_id:032x}-{self.ids.generate_span_id():016x}-{flags:02x}"}
                if sampling.trace_state:
                    dropped[TRACESTATE] = sampling.trace_state.to_header()
                return await self._dropped(scope, receive, send, dropped)
        if not remote.is_valid:
            self.ids.preset = trace_id  # the root span's trace id: the one just sampled
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            self.name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={**self.attributes, "url.path": scope["path"]},
        ) as span:
            self.ids.preset = 0  # taken by the span (unless the SDK made none): never another's
            await self.app(scope, receive, sending)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
