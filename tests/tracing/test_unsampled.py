"""The cheap unsampled path, in process (the SDK real, an in-memory exporter beside the console
one): a request the ratio sampler drops makes no span at all (no current span, no producer span),
hands nothing to an exporter, and still carries its not-sampled context in the order's headers, so
every run drops its span too; a sampled one makes both spans, on the trace id it was sampled on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orderflow import otel

SCOPE: dict[str, Any] = {
    "type": "http",
    "path": "/orders",
    "headers": [(b"content-type", b"application/json")],
}


async def send(message: Any) -> None:
    pass


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def request(
    monkeypatch: pytest.MonkeyPatch, ratio: str, sent: list[tuple[bytes, bytes]] | None = None
) -> tuple[dict[str, str], list[Any], InMemorySpanExporter]:
    """One POST /orders through the server span and the producer span, at `ratio`."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")  # the SDK reads these itself
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", ratio)
    env = {"OTEL_TRACES_EXPORTER": "console"}  # the batch processor and its exporter, no network
    tracer = otel.Tracer.from_environment("orderflow-ingest", "i-1", env)
    seen = InMemorySpanExporter()
    tracer.provider.add_span_processor(SimpleSpanProcessor(seen))
    headers: dict[str, str] = {}
    spans: list[Any] = []

    async def orders(scope: Any, receive: Any, send: Any) -> None:
        spans.append(trace.get_current_span())
        with tracer.producer("orders.default", "o-1", headers) as span:
            spans.append(span)
        await send({"type": "http.response.start", "status": 200})

    async def main() -> None:
        scope = {**SCOPE, "headers": [*SCOPE["headers"], *(sent or [])]}
        await tracer.server(orders, "/orders")(scope, receive, send)

    try:
        asyncio.run(main())
    finally:
        tracer.shutdown()
    return headers, spans, seen


def test_an_unsampled_request_makes_no_span_and_no_exporter_work(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, [server, producer], seen = request(monkeypatch, "0")
    assert not server.get_span_context().is_valid  # no span made, no OpenTelemetry context attached
    assert producer is trace.INVALID_SPAN  # no producer span: the sampler would drop it too
    assert seen.get_finished_spans() == ()  # nothing reached a span processor
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16) and int(trace_id, 16) and int(span_id, 16)
    assert int(flags, 16) & 1 == 0  # not sampled: every run drops its span too


def test_a_client_s_unsampled_context_is_carried_not_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    headers, [server, producer], seen = request(monkeypatch, "1", [(b"traceparent", parent.encode())])
    assert not server.get_span_context().is_valid and producer is trace.INVALID_SPAN
    assert seen.get_finished_spans() == ()  # parent-based: the client's "not sampled" wins over ratio 1
    assert headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert int(headers["traceparent"][-2:], 16) & 1 == 0


def test_a_sampled_request_records_both_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, [server, producer], seen = request(monkeypatch, "1")
    assert producer is not server and producer.get_span_context().trace_flags.sampled
    assert [s.name for s in seen.get_finished_spans()] == ["send orders.default", "POST /orders"]
    context = producer.get_span_context()
    assert headers["traceparent"][:-2] == f"00-{context.trace_id:032x}-{context.span_id:016x}-"
    assert int(headers["traceparent"][-2:], 16) & 1 == 1  # sampled


def test_the_ratio_is_decided_once_on_the_trace_id_the_span_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 50 %, about half the requests make spans, and each one's trace id is one the ratio keeps
    (a second draw by the SDK, decided again, would keep about a quarter)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    tracer = otel.Tracer.from_environment("orderflow-ingest", "i-1", {"OTEL_TRACES_EXPORTER": "console"})
    seen = InMemorySpanExporter()
    tracer.provider.add_span_processor(SimpleSpanProcessor(seen))
    bound = tracer.provider.sampler.bound  # type: ignore[attr-defined]

    async def orders(scope: Any, receive: Any, send: Any) -> None:
        pass

    async def main() -> None:
        server = tracer.server(orders, "/orders")
        for _ in range(400):
            await server(SCOPE, receive, send)

    try:
        asyncio.run(main())
    finally:
        tracer.shutdown()
    spans = seen.get_finished_spans()
    assert 140 <= len(spans) <= 260  # 200 expected; 260+ or 140- is about 6 standard deviations
    assert all(s.context.trace_id & ((1 << 64) - 1) < bound for s in spans)
