"""The cheap unsampled path, in process (the SDK real, an in-memory exporter beside the console
one): a request the ratio sampler drops makes no recording span and no second (producer) span,
hands nothing to an exporter, and still carries its not-sampled context in the order's headers, so
every run drops its span too; a sampled one makes both spans."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orderflow import otel

SCOPE = {"type": "http", "path": "/orders", "headers": [(b"content-type", b"application/json")]}


def request(
    monkeypatch: pytest.MonkeyPatch, ratio: str
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

    async def send(message: Any) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main() -> None:
        await tracer.server(orders, "/orders")(SCOPE, receive, send)

    try:
        asyncio.run(main())
    finally:
        tracer.shutdown()
    return headers, spans, seen


def test_an_unsampled_request_makes_no_recording_span_and_no_exporter_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers, [server, producer], seen = request(monkeypatch, "0")
    assert not server.is_recording()
    assert producer is server  # no second span: the sampler would drop it too
    assert seen.get_finished_spans() == ()  # nothing reached a span processor
    assert int(headers["traceparent"][-2:], 16) & 1 == 0  # not sampled: every run drops its span too
    assert headers["traceparent"].split("-")[2] == f"{server.get_span_context().span_id:016x}"


def test_a_sampled_request_records_both_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    headers, [server, producer], seen = request(monkeypatch, "1")
    assert producer is not server and producer.get_span_context().trace_flags.sampled
    assert [s.name for s in seen.get_finished_spans()] == ["send orders.default", "POST /orders"]
    context = producer.get_span_context()
    assert headers["traceparent"][:-2] == f"00-{context.trace_id:032x}-{context.span_id:016x}-"
    assert int(headers["traceparent"][-2:], 16) & 1 == 1  # sampled
