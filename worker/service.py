"""The worker process: pools + fetch loops per task type, control subjects, probes, and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orderflow import broker, contract, httpserver
from orderflow.config import Settings
from orderflow.lifecycle import Lifecycle, wait_any
from orderflow.metrics import WorkerMetrics
from orderflow.natsmux import Requester
from worker.consumer import FetchLoop
from worker.handlers import Registry, load_handlers
from worker.kube import PodDeletionCostKeeper
from worker.outcome import Kind, Settler
from worker.pool import Pool
from worker.status import StatusStore

log = logging.getLogger(__name__)


class WorkerService:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics(registry or CollectorRegistry())
        self.handlers: Registry = load_handlers(settings)  # fail fast on a missing handler
        self.lifecycle = Lifecycle()
        self.pools: list[Pool] = []
        self.loops: list[FetchLoop] = []
        self.nc: Client | None = None
        self.ready = False
        self.draining = False
        self._stop_fetching = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._on_load_change: Callable[[], None] = lambda: None

    # --- HTTP: probes and metrics -------------------------------------------------------------
    def http_app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(request: Request) -> Response:
            if self.draining:
                return JSONResponse({"status": "not-ready", "reason": "draining"}, 503)
            if not self.ready or self.nc is None or not self.nc.is_connected:
                return JSONResponse({"status": "not-ready", "reason": "NATS not connected"}, 503)
            return JSONResponse({"status": "ready"})

        async def metrics(request: Request) -> Response:
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/readyz", readyz),
                Route("/metrics", metrics),
            ]
        )

    # --- start ------------------------------------------------------------------------------
    async def run(self) -> int:
        s = self.settings
        self.lifecycle.install()
        server = httpserver.make_server(self.http_app(), s.log_level)
        sock = httpserver.bind(s.http_host, s.http_port)
        http = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        try:
            self.nc = await broker.connect_retrying(s, f"worker-{s.worker_id}", self.lifecycle.stop)
        except Exception:
            server.should_exit = True
            await http
            return 0 if self.lifecycle.stop.is_set() else 1
        try:
            await self._start(self.nc)
        except broker.BrokerConfigError as exc:
            log.error("%s", exc)
            server.should_exit = True
            await http
            return 1
        self.ready = True
        slots = ", ".join(f"{p.task_type.name}={p.capacity}" for p in self.pools)
        log.info("worker %s ready: slots %s, http :%d", s.worker_id, slots, s.http_port)
        await self.lifecycle.stop.wait()
        await self.drain()
        server.should_exit = True
        await http
        return 0

    async def _start(self, nc: Client) -> None:
        s = self.settings
        js = nc.jetstream(timeout=5.0)
        await broker.ensure_layout(js, s)
        requests = await Requester(nc).start()
        status = StatusStore(nc, requests)
        settler = Settler(requests, status, s, self.metrics)
        self._on_load_change = self._kube_keeper()
        for task_type in s.task_types:
            handle = await broker.ensure_consumer(js, s, task_type.name)
            # Paced from ack_wait as the server has it (an operator may have edited it).
            heartbeat_s = max(0.1, handle.ack_wait_s / 3)
            pool = Pool(
                task_type,
                self.handlers.get(task_type.name),
                settler,
                status,
                self.metrics,
                s.worker_id,
                heartbeat_s,
                s.max_deliver,
                on_load_change=lambda: self._on_load_change(),
                lease_s=0.75 * handle.ack_wait_s,
            )
            loop = FetchLoop(nc, handle.name, pool, s.fetch_expiry_s)
            self.pools.append(pool)
            self.loops.append(loop)
            self._spawn(f"heartbeat-{task_type.name}", pool.heartbeat)
            self._spawn(f"timeouts-{task_type.name}", pool.enforce_timeouts)
            self._spawn(f"fetch-{task_type.name}", self._supervised(f"fetch-{task_type.name}", loop))
            self._spawn(f"consumer-info-{handle.name}", functools.partial(self._sample, js, handle.name))
        self.metrics.draining.set(0)
        await nc.subscribe(contract.CONTROL_CANCEL, cb=self._on_cancel)

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        async def body() -> None:
            await factory()

        self._background.append(asyncio.create_task(body(), name=name))

    def _supervised(self, name: str, loop: FetchLoop) -> Callable[[], Awaitable[None]]:
        async def supervise() -> None:
            while not self._stop_fetching.is_set():
                try:
                    await loop.run(self._stop_fetching)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.metrics.slot_restarts.labels("fetch").inc()
                    log.exception("%s crashed; restarting it", name)
                    await asyncio.sleep(0.5)

        return supervise

    async def _sample(self, js: JetStreamContext, consumer: str) -> None:
        pending = self.metrics.consumer_pending.labels(consumer)
        ack_pending = self.metrics.consumer_ack_pending.labels(consumer)
        while True:
            with contextlib.suppress(Exception):
                info = await js.consumer_info(contract.STREAM, consumer)
                pending.set(info.num_pending or 0)
                ack_pending.set(info.num_ack_pending or 0)
            await asyncio.sleep(self.settings.consumer_info_interval_s)

    def _kube_keeper(self) -> Callable[[], None]:
        """Keep this pod's deletion cost in step with its load (only inside a cluster)."""
        keeper = PodDeletionCostKeeper.from_settings(self.settings)
        if keeper is None:
            return lambda: None
        total = sum(t.concurrency for t in self.settings.task_types)
        self._spawn("pod-deletion-cost", lambda: keeper.run(self._stop_fetching))

        def update() -> None:
            keeper.update(sum(len(p.running) for p in self.pools), total)

        return update

    # --- control ----------------------------------------------------------------------------
    async def _on_cancel(self, msg: Msg) -> None:
        order_id = msg.data.decode(errors="replace").strip()
        for pool in self.pools:
            job = pool.find(order_id)
            if job is not None:
                pool.stop_job(job, Kind.CANCELLED)
                log.info("cancelling order %s on request", order_id)
                if msg.reply:
                    await msg.respond(f"cancelled by {self.settings.worker_id}".encode())
                return

    # --- drain (SPEC §3) --------------------------------------------------------------------
    async def drain(self) -> None:
        s = self.settings
        started = time.monotonic()
        deadline = started + s.drain_timeout_s
        hand_back_at = deadline - s.handback_lead_s
        running_at_start = sum(len(p.running) for p in self.pools)
        self.draining = True
        self.metrics.draining.set(1)
        log.info("draining: %d jobs running, %.0fs budget", running_at_start, s.drain_timeout_s)

        # Phase 1: stop fetching at once. A pull request already out ends within fetch_expiry_s;
        # what it still brings is handed back unstarted.
        self._stop_fetching.set()
        for pool in self.pools:
            pool.wake()
        fetchers = [t for t in self._background if t.get_name().startswith("fetch-")]
        await asyncio.wait(fetchers, timeout=s.fetch_expiry_s + 2.0)
        for t in fetchers:
            t.cancel()
        await asyncio.gather(*(loop.close() for loop in self.loops), return_exceptions=True)
        unstarted = sum(loop.handed_back_unstarted for loop in self.loops)

        # Phase 2: let running jobs finish; heartbeats keep flowing. Ends early on a second signal.
        idle = asyncio.gather(*(p.wait_idle() for p in self.pools))
        await wait_any(idle, self.lifecycle.force.wait(), timeout_s=max(0.0, hand_back_at - time.monotonic()))

        # Phase 3: hand back what still runs, so another worker starts it now, not after ack_wait.
        stopping = [job for p in self.pools for job in p.running.values()]
        for pool in self.pools:
            for job in list(pool.running.values()):
                pool.stop_job(job, Kind.HANDED_BACK)
        tasks = [job.task for job in stopping if job.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))

        # Phase 4: heartbeats and samplers off, then drain the connection (flushes acks and naks).
        for t in self._background:
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), timeout=5.0)
        self.metrics.draining.set(0)
        log.info(
            "drained in %.1fs: %d running at SIGTERM, %d handed back at the deadline, %d fetched but never started",
            time.monotonic() - started,
            running_at_start,
            len(stopping),
            unstarted,
        )
