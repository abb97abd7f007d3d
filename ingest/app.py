"""The ingest ASGI app: create_app(settings) and its lifespan (NATS connect, layout, drain)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.client import Client
from nats.js.kv import KeyValue
from nats.nuid import NUID
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest import routes
from ingest.orders import ROUTE, OrdersEndpoint
from ingest.publisher import Publisher
from orderflow import broker, contract
from orderflow.config import Settings
from orderflow.metrics import IngestMetrics
from orderflow.natsmux import Requester

log = logging.getLogger(__name__)


_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(n: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = _DIGITS[r] + out
    return out.rjust(6, "0")


class IngestState:
    """Everything the routes need, built once per process."""

    def __init__(self, settings: Settings, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.default_type = settings.task_types[0].name
        self.direct = routes.TokenBucket(settings.rate_limit_rps) if settings.mode == "direct" else None
        self.nc: Client | None = None
        self.publisher: Publisher | None = None
        self.requests: Requester | None = None
        self.kv: KeyValue | None = None
        self.shutting_down = False
        # Order ids: a random per-process prefix and a counter, base 62. Unique across processes
        # and restarts (the prefix), ordered within one process, and a fraction of NUID's cost.
        self._id_prefix = NUID().next().decode()[:12]
        self._id_counter = 0
        self._ready_checked_at = 0.0
        self._ready_problem: str | None = "connecting to NATS"
        self._fatal: str | None = None

    def new_id(self) -> str:
        self._id_counter += 1
        return self._id_prefix + _base62(self._id_counter)

    @property
    def connected(self) -> bool:
        return self.nc is not None and bool(self.nc.is_connected)

    async def not_ready(self) -> str | None:
        if self.shutting_down:
            return "shutting down"
        if self._fatal:
            return self._fatal
        if self.direct is not None:
            return None  # direct mode does not need NATS to answer
        if not self.connected or self.nc is None:
            return "NATS not connected"
        # The stream check is a JetStream API request: cache it for a second so a probe storm
        # cannot turn into an API storm.
        now = time.monotonic()
        if now - self._ready_checked_at > 1.0:
            self._ready_checked_at = now
            try:
                await self.nc.jetstream(timeout=1.0).stream_info(contract.STREAM)
                self._ready_problem = None
            except Exception as exc:
                self._ready_problem = f"stream {contract.STREAM} unreachable: {type(exc).__name__}"
        return self._ready_problem

    async def connect(self) -> None:
        nc = await broker.connect_retrying(self.settings, f"ingest-{self.settings.worker_id}")
        js = nc.jetstream(timeout=self.settings.publish_timeout_s)
        while True:
            try:
                await broker.ensure_layout(js, self.settings)
                break
            except broker.BrokerConfigError as exc:
                # An operator has to act; say so on every readiness probe and in the log.
                log.error("%s", exc)
                self._fatal = str(exc)
                return
            except Exception as exc:
                log.warning("JetStream not ready (%s); retrying", exc)
                await asyncio.sleep(1.0)
        self.kv = await js.key_value(contract.STATUS_BUCKET)
        self.requests = await Requester(nc, self.settings.publish_timeout_s).start()
        self.publisher = Publisher(nc, self.requests, self.settings, self.metrics)
        self.nc = nc
        self._ready_checked_at = 0.0
        log.info("connected to NATS; stream %s ready", contract.STREAM)


class MetricsMiddleware:
    """Counts every response by route template, method and status; times it by route."""

    def __init__(self, app: ASGIApp, metrics: IngestMetrics) -> None:
        self.app = app
        self.requests = metrics.http_requests
        self.duration = metrics.http_duration
        self._children: dict[tuple[str, str, int], Any] = {}
        self._timers = {r: metrics.http_duration.labels(r) for r in (*_ROUTES, "other")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = (
            path if path in _ROUTES else ("/orders/{order_id}" if path.startswith("/orders/") else "other")
        )
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


_ROUTES = ("/orders", "/orders/{order_id}", "/healthz", "/readyz", "/metrics", "/openapi.json")


class IngestApp:
    """The ASGI app: POST /orders goes straight to the hot-path handler, the rest to Starlette."""

    def __init__(self, starlette: Starlette, state: IngestState) -> None:
        self.starlette = starlette
        self.state = state
        self.orders = OrdersEndpoint(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == ROUTE and scope["method"] == "POST":
            await self.orders(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> IngestApp:
    # prometheus_client's own switch, set by ingest/multiproc.py for its children.
    metrics = IngestMetrics(registry or CollectorRegistry(), os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    state = IngestState(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connecting: asyncio.Task[None] | None = None
        if settings.mode == "queued" and state.nc is None:
            connecting = asyncio.create_task(state.connect(), name="nats-connect")
        else:
            log.info("direct mode: work inline, capacity %g RPS", settings.rate_limit_rps)
        try:
            yield
        finally:
            # Runs after uvicorn has finished the in-flight requests: drain flushes what is left.
            if connecting is not None and not connecting.done():
                connecting.cancel()
            if state.requests is not None:
                await state.requests.stop()
            if state.nc is not None and not state.nc.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(state.nc.drain(), timeout=5.0)
                log.info("NATS connection drained")

    app = Starlette(
        routes=[
            Route("/orders/{order_id}", routes.get_order, methods=["GET"]),
            Route("/healthz", routes.healthz, methods=["GET"]),
            Route("/readyz", routes.readyz, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/openapi.json", routes.openapi, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.ingest = state
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return IngestApp(app, state)
