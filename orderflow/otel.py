"""OpenTelemetry, imported only when tracing is on (orderflow/tracing.py decides): the provider
from the standard OTEL_* variables (exporter and protocol, sampler, resource, batch settings), and
the spans both services share, named by the OpenTelemetry messaging conventions.

The trace context travels by hand in the order's NATS headers (`traceparent`, `tracestate`): the
third-party nats-py instrumentation patches `Client.publish`, which orderflow uses for every ack,
heartbeat and KV write, and would make a span of each."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode
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


class Tracer:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("orderflow")

    @classmethod
    def from_environment(cls, service: str, instance: str, env: Mapping[str, str]) -> Tracer:
        """The SDK reads the sampler (OTEL_TRACES_SAMPLER, _ARG), the exporter's endpoint, headers
        and timeouts and the batch settings (OTEL_BSP_*) from the environment itself."""
        attributes: dict[str, Any] = {"service.instance.id": instance}
        if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes["service.name"] = service
        provider = TracerProvider(resource=Resource.create(attributes))
        processor: SpanProcessor = BatchSpanProcessor(_exporter(env))
        provider.add_span_processor(processor)
        logformat.current_trace = _current_ids  # JSON log lines carry the current span's ids
        return cls(provider)

    def shutdown(self) -> None:
        """Export what is left (the provider also does it at exit)."""
        self.provider.shutdown()

    @staticmethod
    def failed(span: Span, description: str) -> None:
        span.set_status(StatusCode.ERROR, description)

    def server(self, app: ASGIApp, route: str) -> ASGIApp:
        """`app` (the POST /orders endpoint) inside a server span, the client's trace continued."""
        return _ServerSpans(app, self.tracer, route)

    @contextmanager
    def producer(self, destination: str, order_id: str, headers: dict[str, str]) -> Iterator[Span]:
        """The publish of an order and its PubAck wait, as a producer span; its context goes into
        `headers`, so every run of the order (on any pod) is its child.
        The cheap unsampled path: under a request span the sampler dropped (most requests at a
        ratio), no second span is made (the sampler would drop it too: parent-based, or the same
        trace id's ratio); the request's context, not-sampled flag and all, goes into `headers`,
        so every run drops its span as well."""
        current = trace.get_current_span()
        context = current.get_span_context()
        if context.is_valid and not context.trace_flags.sampled:
            propagate.inject(headers)
            yield current
            return
        current.set_attribute("orderflow.order.id", order_id)
        with self.tracer.start_as_current_span(
            f"send {destination}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "send",
                "messaging.operation.name": "publish",
                "messaging.destination.name": destination,
                "messaging.message.id": order_id,
                "orderflow.order.id": order_id,
            },
        ) as span:
            propagate.inject(headers)
            yield span

    def consumer(
        self, destination: str, headers: Mapping[str, str] | None, start_s: float, attributes: dict[str, Any]
    ) -> Span:
        """A run of an order, started (not current: it ends in another callback)."""
        carrier = {k: v for k, v in (headers or {}).items() if k in (TRACEPARENT, TRACESTATE)}
        parent: Context | None = propagate.extract(carrier) if carrier else None
        return self.tracer.start_span(
            f"process {destination}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": destination,
                **attributes,
            },
            start_time=int(start_s * 1e9),
        )


# The run span of the job the current task runs (worker/tracing.py): it is not made the current
# span (it ends in a callback that may run in another task), so log lines find it here.
RUN_SPAN: ContextVar[Span | None] = ContextVar("orderflow_run_span", default=None)


def _current_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        run = RUN_SPAN.get()
        if run is None:
            return None
        context = run.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class _ServerSpans:
    def __init__(self, app: ASGIApp, tracer: trace.Tracer, route: str) -> None:
        self.app = app
        self.tracer = tracer
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier = {}
        for name, value in scope["headers"]:
            header = _TRACE_HEADERS.get(name)
            if header is not None:
                carrier[header] = value.decode("latin-1")
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracer.start_as_current_span(
            f"POST {self.route}",
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": self.route, "url.path": scope["path"]},
        ) as span:
            await self.app(scope, receive, sending)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
