"""orderflow/probes.py: one answer for /healthz, /readyz and /metrics from a small state, usable as
plain (status, headers, body) triples (the worker's probe thread) and as Starlette routes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette

from orderflow import probes


class StandInState:
    """A stand-in for a service's state (named as such): problems are set by the test."""

    def __init__(self) -> None:
        self.alive: str | None = None
        self.ready: str | None = None
        self.registry = CollectorRegistry()
        Counter("orderflow_test_things", "Things.", registry=self.registry).inc(3)

    def liveness_problem(self) -> str | None:
        return self.alive

    def readiness_problem(self) -> str | None:
        return self.ready

    @property
    def exposition(self) -> CollectorRegistry:
        return self.registry


def test_plain_answers_carry_the_reason_of_a_503() -> None:
    state = StandInState()
    assert probes.answer(state, "/healthz") == (
        200,
        [(b"content-type", b"application/json")],
        b'{"status":"ok"}',
    )
    ready = probes.answer(state, "/readyz")
    assert ready is not None and ready[0] == 200
    state.ready, state.alive = "draining", "event loop blocked for 9.0s"
    status, _, body = probes.readyz(state)
    assert status == 503 and json.loads(body) == {"status": "not-ready", "reason": "draining"}
    status, _, body = probes.healthz(state)
    assert status == 503 and json.loads(body)["reason"] == "event loop blocked for 9.0s"
    status, headers, body = probes.metrics(state)
    assert status == 200 and b"orderflow_test_things_total 3.0" in body
    assert dict(headers)[b"content-type"].startswith(b"text/plain")
    assert probes.answer(state, "/orders") is None


def call(app: Any, method: str, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through an ASGI app, in process."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_starlette_routes_give_the_same_answers() -> None:
    state = StandInState()
    app = Starlette(routes=probes.routes(state))
    assert json.loads(call(app, "GET", "/healthz")[2]) == {"status": "ok"}
    state.ready = "NATS not connected"
    status, headers, body = call(app, "GET", "/readyz")
    assert status == 503 and json.loads(body)["reason"] == "NATS not connected"
    assert headers[b"content-type"] == b"application/json"
    assert b"orderflow_test_things_total" in call(app, "GET", "/metrics")[2]
    status, headers, _ = call(app, "POST", "/readyz")
    assert status == 405 and set(headers[b"allow"].split(b", ")) == {b"GET", b"HEAD"}


def test_metrics_are_openmetrics_with_exemplars_only_when_tracing_and_the_scraper_asks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tracing on (orderflow/tracing.py sets probes.openmetrics), Prometheus's Accept gets
    OpenMetrics, whose histogram buckets carry exemplars (a traced request's trace id); any other
    scraper, or any scraper while tracing is off, the text format of before, without them."""
    state = StandInState()
    Histogram("orderflow_test_seconds", "Seconds.", registry=state.registry).observe(
        0.2, {"trace_id": "ab" * 16}
    )
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, [(_, content_type)], body = probes.answer(state, "/metrics", accept) or (0, [(b"", b"")], b"")
    assert content_type.startswith(b"text/plain") and b"trace_id" not in body  # tracing off
    monkeypatch.setattr(probes, "openmetrics", True)
    status, [(_, content_type)], body = probes.answer(state, "/metrics", accept) or (0, [(b"", b"")], b"")
    assert status == 200 and content_type.startswith(b"application/openmetrics-text")
    assert b'orderflow_test_seconds_bucket{le="0.25"} 1.0 # {trace_id="' + b"ab" * 16 + b'"} 0.2' in body
    assert body.endswith(b"# EOF\n")
    status, [(_, content_type)], body = probes.answer(state, "/metrics") or (0, [(b"", b"")], b"")
    assert content_type.startswith(b"text/plain") and b"trace_id" not in body
