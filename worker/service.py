"""The worker process: a pipeline, pool and fetch loop per task type, the control subject, health,
ranks, and the drain."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from orderflow import broker, consumers, contract, natsauth, streams, tracing
from orderflow.config import Settings
from orderflow.lifecycle import Lifecycle, wait_any
from orderflow.link import Link
from orderflow.metrics import WorkerMetrics
from orderflow.natsmux import Requester
from worker import payload
from worker.admission import Recovery
from worker.callback import Deliverer
from worker.cancels import CancelMarkers
from worker.consumer import FetchLoop
from worker.deadline import DeadlineReader
from worker.delivery import Kind, Limits
from worker.drain import Started, drain
from worker.handlers import Registry, StopSignal, load_handlers
from worker.health import LoopWatch, ProbeServer
from worker.hooks import Hooks, MetricsHook, PodLoad, context_hooks, exemplar_of
from worker.jetstream import Stopped, sample_consumer, sample_store, until_answered
from worker.job import JobPipeline
from worker.kube import PodDeletionCostKeeper
from worker.path import build
from worker.pool import Pool
from worker.ranks import MAX_PRIORITY, Ranks
from worker.run import Run
from worker.timing import Timing
from worker.transport import NatsTransport

log = logging.getLogger(__name__)

_STREAM_LEADER_ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED"
_RECOVER_ON = (contract.STREAM, "KV_" + contract.STATUS_BUCKET)


@dataclass
class TypeRunner:
    """One task type: its consumer, pipeline, pool and fetch loop."""

    task_type: str
    consumer: consumers.ConsumerHandle
    pipeline: JobPipeline
    pool: Pool[Run]
    loop: FetchLoop
    hooks: Hooks = field(default_factory=Hooks)  # the pipeline's: the drain's hand-back notice goes to them


class WorkerService:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics(registry or CollectorRegistry())
        self.handlers: Registry = load_handlers(settings)  # fail fast on a missing handler
        self.lifecycle = Lifecycle()
        self.timing = Timing.derive(settings)
        self.runners: list[TypeRunner] = []
        self.nc: Client | None = None
        self.ready = False
        self.draining = False
        self.cancels = CancelMarkers()
        self.load = PodLoad()
        # None unless the `otel` extra is installed and the OTEL_* variables ask for traces
        self.tracer = tracing.setup("orderflow-worker", settings.worker_id)
        self.watch: LoopWatch | None = None
        self.keeper: PodDeletionCostKeeper | None = None
        self.deadlines = DeadlineReader(None, "not started")
        self.stopping = StopSignal()  # set when the drain starts: every handler's job.stopping
        self.stop_fetching = asyncio.Event()
        self.started = Started()  # every task it starts outside a job: the drain ends them
        self.ranks: Ranks | None = None
        self.link = Link()
        self.requests: Requester | None = None

    # --- health (orderflow/probes.Probed, read from the probe thread) ---------------------------
    @property
    def exposition(self) -> CollectorRegistry:
        return self.metrics.registry

    def liveness_problem(self) -> str | None:
        watch = self.watch
        if watch is not None and watch.blocked_s > self.timing.loop_block_limit_s:
            return f"event loop blocked for {watch.blocked_s:.1f}s"
        return None

    def readiness_problem(self) -> str | None:
        if self.draining:
            return "draining"
        if not self.ready or self.nc is None or not self.nc.is_connected:
            return "NATS not connected"
        return self.liveness_problem()

    # --- start ----------------------------------------------------------------------------------
    async def run(self) -> int:
        s = self.settings
        self.lifecycle.install()
        self.watch = LoopWatch(asyncio.get_running_loop()).start()
        self.metrics.event_loop_lag.set_function(lambda: self.watch.lag_s if self.watch else 0.0)
        # Read at scrape time: _start re-derives the timing from the server's ack_wait.
        self.metrics.event_loop_block_limit.set_function(lambda: self.timing.loop_block_limit_s)
        probes = ProbeServer(s.http_host, s.http_port, self).start()
        try:
            try:
                self.nc = await broker.connect_retrying(
                    s, f"worker-{s.worker_id}", self.lifecycle.stop, self.link, self._on_reconnect
                )
            except natsauth.NatsAccessError as exc:
                # A wrong CA, an unknown or revoked user: no retry helps, an operator must act.
                return _operator_must_act(exc)
            except Exception:
                return 0 if self.lifecycle.stop.is_set() else 1
            try:
                await self._start(self.nc)
            except Stopped:  # SIGTERM while JetStream was not answering yet
                return 0
            except broker.BrokerConfigError as exc:
                return _operator_must_act(exc)
            self.ready = True
            slots = ", ".join(f"{r.task_type}={r.pool.capacity}" for r in self.runners)
            log.info("worker %s ready: slots %s, http :%d", s.worker_id, slots, probes.port)
            await self.lifecycle.stop.wait()
            await drain(self)
            return 0
        finally:
            await probes.stop()
            self.watch.stop()

    async def _start(self, nc: Client) -> None:
        s = self.settings
        js = nc.jetstream(timeout=5.0)
        stop = self.lifecycle.stop
        layout = await until_answered("the stream layout", lambda: streams.ensure_layout(js, s), stop)
        served = [t.name for t in s.served_types]
        await until_answered(
            "the payload declarations",
            lambda: payload.declare(js, served, self.handlers.payload, s.worker_id),
            stop,
        )
        requests = self.requests = await Requester(nc).start()
        # A reply that can no longer come (its connection is gone) fails now, not at its timeout.
        self.link.on_lost(requests.connection_lost)
        transport = NatsTransport(nc, requests)
        recovery = Recovery(self.timing.recovery_window_s)
        self.keeper = PodDeletionCostKeeper.from_settings(s)
        if self.keeper is not None:
            self.load.on_change = self.keeper.update
        self.metrics.pod_deletion_cost.set_function(self.load.cost)
        self.deadlines = DeadlineReader.from_settings(s, self.keeper.pod if self.keeper else None)
        # Before ready: a SIGTERM right after must find the client built (that takes ~1 s).
        await self.deadlines.prepare()
        # The cancel markers before any fetch: a first delivery of a generated id reads no status,
        # only this set, so an order cancelled while it waited must be in it when it arrives.
        self.started.spawn("cancel-markers", lambda: self.cancels.watch(js))
        while not self.cancels.loaded.is_set() and not self.lifecycle.stop.is_set():
            if not await wait_any(self.cancels.loaded.wait(), self.lifecycle.stop.wait(), timeout_s=5.0):
                log.warning(
                    "cancel markers (KV %s) not loaded yet; not fetching before", contract.CANCELS_BUCKET
                )
        for task_type in s.served_types:
            consumer = await until_answered(
                f"consumer of {task_type.name}",
                functools.partial(consumers.ensure_consumer, nc, s, task_type.name),
                stop,
            )
            # Paced from ack_wait as the server has it (an operator may have edited it).
            timing = Timing.derive(s, consumer.ack_wait_s)
            self.timing = timing
            context = context_hooks(s, self.tracer, consumer.name)
            hooks = Hooks(
                MetricsHook(self.metrics, task_type.name, exemplar_of(context)), self.load, *context
            )
            path = build(
                task_type.name,
                self.handlers.get(task_type.name),
                transport,
                hooks,
                timing,
                Limits.of(s, timing),
                worker_id=s.worker_id,
                capacity=task_type.concurrency,
                timeout_s=task_type.timeout_s,
                recovery=recovery,
                is_cancelled=self.cancels.__contains__,
                schedules=layout.schedules,
                codec=self.handlers.payload(task_type.name),
                stopping=self.stopping,
                deliver=Deliverer(s),
            )
            pipeline, pool = path.pipeline, path.pool
            loop = FetchLoop(
                nc, consumer.name, pool, timing.fetch_expiry_s, timing.fetch_grace_s, pipeline.give_back
            )
            if consumer.priority:
                # Every pull to a prioritized consumer names the group; until its rank is known a
                # new worker takes the last place (it is the newest).
                loop.priority = MAX_PRIORITY
            self.runners.append(TypeRunner(task_type.name, consumer, pipeline, pool, loop, hooks))
            self.metrics.in_flight.labels(task_type.name).set_function(functools.partial(len, pool.running))
            self.metrics.pool_slots.labels(task_type.name).set(pool.capacity)
            self.started.spawn(f"ticker-{task_type.name}", pool.ticker)
            fetch = f"fetch-{task_type.name}"
            crashed = self.metrics.slot_restarts.labels("fetch").inc
            self.started.fetchers.append(
                asyncio.create_task(loop.supervised(fetch, self.stop_fetching, crashed), name=fetch)
            )
            self.started.spawn(
                f"consumer-info-{consumer.name}",
                functools.partial(
                    sample_consumer, js, self.metrics, consumer.name, s.consumer_info_interval_s
                ),
            )
        self.started.spawn("store-info", functools.partial(sample_store, js, self.metrics, layout.caps, s))
        if any(r.consumer.priority for r in self.runners):
            ranks = self.ranks = Ranks(
                s.worker_id,
                self.timing.rank_refresh_s,
                self.timing.rank_ttl_s,
                self._set_priority,
                leave_s=self.timing.rank_leave_s,
                facts=self._rank_facts,
            )
            self.started.spawn("ranks", lambda: ranks.run(js))
        else:
            self.metrics.pull_priority.set(-1)
        if self.keeper is not None:
            keeper = self.keeper
            self.started.spawn("pod-deletion-cost", lambda: keeper.run(self.stop_fetching))
            self.started.spawn("pod-deletion-cost-refresh", lambda: keeper.refresh(self.load.cost))
        self.metrics.draining.set(0)
        await nc.subscribe(contract.CONTROL_CANCEL, cb=self._on_cancel)
        # A stream or consumer leader change (a cluster failover) may come with redeliveries a
        # restored consumer did not know were running: treat it like a reconnect. Any stream's new
        # leader also means a write sent to its old one is never answered: those are sent again.
        await nc.subscribe(f"{_STREAM_LEADER_ELECTED}.*", cb=self._on_leader)
        await nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{contract.STREAM}.*", cb=self._on_leader
        )

    def _set_priority(self, rank: int) -> None:
        for r in self.runners:
            if r.consumer.priority:
                r.loop.priority = rank
        self.metrics.pull_priority.set(rank)

    def _rank_facts(self) -> dict[str, Any]:
        """Beside this worker's rank entry, for the console's workers table (worker/ranks.py)."""
        return {
            "slots_busy": sum(len(r.pool.running) for r in self.runners),
            "slots_total": sum(r.pool.capacity for r in self.runners),
            "draining": self.draining,
            "deletion_cost": self.keeper.applied if self.keeper else None,
        }

    # --- recovery -----------------------------------------------------------------------------
    async def _on_reconnect(self) -> None:
        for r in self.runners:
            r.loop.reset()
        self._recover("reconnected")

    async def _on_leader(self, msg: Msg) -> None:
        if msg.subject.startswith(_STREAM_LEADER_ELECTED):
            if self.requests is not None:
                self.requests.leader_changed()
            # ORDERS: its consumer's state moved; the status bucket: leases refreshed while it had
            # no leader were dropped (refreshes are not confirmed), so write them again now.
            if msg.subject.rsplit(".", 1)[-1] not in _RECOVER_ON:
                return
        self._recover("JetStream leader elected")

    def _recover(self, why: str) -> None:
        if self.started.recovering is not None and not self.started.recovering.done():
            return
        running = sum(len(r.pool.running) for r in self.runners)
        log.info(
            "%s: re-leasing %d running jobs; reading status before running for %.0fs",
            why,
            running,
            self.timing.recovery_window_s,
        )

        async def recover() -> None:
            await asyncio.gather(*(r.pipeline.recover() for r in self.runners))

        self.started.recovering = asyncio.create_task(recover(), name="recover")

    # --- control ------------------------------------------------------------------------------
    async def _on_cancel(self, msg: Msg) -> None:
        order_id = msg.data.decode(errors="replace").strip()
        self.cancels.add(order_id)
        for r in self.runners:
            for slot in r.pool:
                if slot.delivery.order_id == order_id:
                    r.pool.stop(slot, Kind.CANCELLED)
                    log.info("cancelling order %s on request", order_id)
                    if msg.reply:
                        await msg.respond(f"cancelled by {self.settings.worker_id}".encode())
                    return


def _operator_must_act(exc: Exception) -> int:
    """Say what and how, and exit 2 (a config error), with no traceback."""
    log.error("%s", exc)
    print(f"worker: {exc}", file=sys.stderr)
    return 2
