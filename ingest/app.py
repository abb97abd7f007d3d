"""The ingest ASGI app: POST /orders straight to the hot-path handler, the rest to Starlette.
No lifespan: the lifecycle (connect, serve, drain) is ingest/server.py's alone."""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest import routes
from ingest.batch import ROUTE as BATCH_ROUTE
from ingest.batch import BatchEndpoint
from ingest.direct import DirectOrders
from ingest.orders import PATHS, ROUTE, OrdersEndpoint, QueuedOrders
from ingest.state import IngestState
from orderflow import probes
from orderflow.metrics import IngestMetrics

# /metrics is not here: it has a port of its own (ingest/server.py), away from the API's clients.
PROBES = ("/healthz", "/readyz")
_ROUTES = (
    "/orders",
    BATCH_ROUTE,
    "/orders/{order_id}",
    "/orders/{order_id}/events",
    *PROBES,
    "/openapi.json",
)


def route_of(path: str) -> str:
    """The route template a path is counted under."""
    if path in _ROUTES:
        return path
    if path == "/orders/":
        return ROUTE
    if path.startswith("/orders/"):
        return "/orders/{order_id}/events" if path.endswith("/events") else "/orders/{order_id}"
    return "other"


class MetricsMiddleware:
    """Counts every response by route template, method and status; times it by route."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics) -> None:
        self.app = app
        self.requests = metrics.http_requests
        self._children: dict[tuple[str, str, int], Any] = {}
        self._timers = {r: metrics.http_duration.labels(r) for r in (*_ROUTES, "other")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_of(scope["path"])
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            key = (route, scope["method"], status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.requests.labels(route, scope["method"], str(status))
            child.inc()
            self._timers[route].observe(time.perf_counter() - start)


class IngestApp:
    def __init__(
        self,
        starlette: Starlette,
        state: IngestState,
        orders: OrdersEndpoint,
        batch: BatchEndpoint,
        entry: ASGIApp,
    ) -> None:
        self.starlette = starlette
        self.state = state
        self.orders = orders
        self.batch = batch
        self.entry = entry  # `orders`, inside its server span when tracing is on
        self.batch_entry = batch if state.tracer is None else state.tracer.server(batch, BATCH_ROUTE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in PATHS:
            await self.entry(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == BATCH_ROUTE:
            await self.batch_entry(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def create_app(state: IngestState) -> IngestApp:
    accept = DirectOrders(state) if state.settings.mode == "direct" else QueuedOrders(state)
    orders = OrdersEndpoint(state, accept)
    batch = BatchEndpoint(state, accept)
    # with tracing on, POST /orders runs inside its server span (orderflow/otel.py); off, untouched
    entry = orders if state.tracer is None else state.tracer.server(orders, ROUTE)
    app = Starlette(
        routes=[
            # POST goes to the hot path before Starlette (IngestApp); these routes give the
            # other methods their 405 with `Allow: POST`.
            *(Route(path, orders, methods=["POST"]) for path in PATHS),
            Route(BATCH_ROUTE, batch, methods=["POST"]),
            Route("/orders/{order_id}", routes.get_order, methods=["GET"]),
            Route("/orders/{order_id}/events", routes.order_events, methods=["GET"]),
            *probes.routes(state, PROBES),  # unauthenticated: the kubelet probes them
            Route("/openapi.json", routes.openapi, methods=["GET"]),
        ]
    )
    app.state.ingest = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return IngestApp(app, state, orders, batch, entry)
