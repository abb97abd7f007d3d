"""/healthz, /readyz and /metrics, answered the same way by every service from a small state.

The answers are plain `(status, headers, body)` triples, so they serve an ASGI app (the ingest's
Starlette routes, `routes()`) and a plain HTTP server in a thread just the same (`answer()`; the
worker's probes run off the event loop, so that a blocked loop cannot silence them). Nothing here
awaits: a service keeps its readiness fresh itself and the probe only reads it.

- liveness: `None` while the process is healthy, else the reason (503 with it);
- readiness: `None` while the service should get traffic, else the reason (503 with it);
- metrics: the registry to expose (a multi-process exposition registry sums every process).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orderflow import contract

Headers = list[tuple[bytes, bytes]]
Answer = tuple[int, Headers, bytes]
PATHS = ("/healthz", "/readyz", "/metrics")

_JSON: Headers = [(b"content-type", b"application/json")]
_METRICS: Headers = [(b"content-type", CONTENT_TYPE_LATEST.encode())]


class Probed(Protocol):
    """What a service exposes to its probes; every call must be cheap and must not block."""

    def liveness_problem(self) -> str | None: ...

    def readiness_problem(self) -> str | None: ...

    @property
    def exposition(self) -> CollectorRegistry: ...


def healthz(state: Probed) -> Answer:
    problem = state.liveness_problem()
    if problem:
        return 503, _JSON, contract.encode({"status": "unhealthy", "reason": problem})
    return 200, _JSON, b'{"status":"ok"}'


def readyz(state: Probed) -> Answer:
    problem = state.readiness_problem()
    if problem:
        return 503, _JSON, contract.encode({"status": "not-ready", "reason": problem})
    return 200, _JSON, b'{"status":"ready"}'


# Set by orderflow/tracing.py when this process traces: only then are there exemplars to show, and
# only then does /metrics answer OpenMetrics (tracing off, the exposition is the text format of
# before, whatever the scraper accepts: OpenMetrics would rename a counter's metadata, for one).
openmetrics = False


def metrics(state: Probed, accept: str = "") -> Answer:
    """The Prometheus text format, or OpenMetrics when tracing is on and the scraper's Accept asks
    for it (Prometheus does by default): only OpenMetrics carries exemplars, the trace ids on the
    duration histograms."""
    if not openmetrics or "application/openmetrics-text" not in accept:
        return 200, _METRICS, generate_latest(state.exposition)
    encode, content_type = choose_encoder(accept)
    return 200, [(b"content-type", content_type.encode())], encode(state.exposition)


_HANDLERS = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


def answer(state: Probed, path: str, accept: str = "") -> Answer | None:
    """The probe answer for `path` (`accept`: the request's Accept header), or None if it is not
    a probe path."""
    if path == "/metrics":
        return metrics(state, accept)
    handler = _HANDLERS.get(path)
    return None if handler is None else handler(state)


def routes(state: Probed, paths: Sequence[str] = PATHS) -> list[Route]:
    """The probes as Starlette routes (GET, and HEAD with it)."""

    def route(path: str) -> Route:
        assert path in _HANDLERS, path

        async def endpoint(request: Request) -> Response:
            found = answer(state, path, request.headers.get("accept", ""))
            assert found is not None  # `path` is one of _HANDLERS
            status, headers, body = found
            return Response(body, status, headers={k.decode(): v.decode() for k, v in headers})

        return Route(path, endpoint, methods=["GET"])

    return [route(p) for p in paths]
