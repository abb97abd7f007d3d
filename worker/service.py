"""The worker process: a pipeline, pool and fetch loop per task type, the control subject, health,
ranks, and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from orderflow import broker, consumers, contract, natsauth, streams, tracing
from orderflow.capacity import Caps
from orderflow.config import Settings
from orderflow.lifecycle import Lifecycle, wait_any
from orderflow.link import Link
from orderflow.metrics import WorkerMetrics
from orderflow.natsmux import Requester
from worker import drainreport, payload
from worker.admission import Recovery
from worker.callback import Deliverer
from worker.cancels import CancelMarkers
from worker.consumer import FetchLoop
from worker.deadline import DeadlineReader
from worker.delivery import Kind, Limits
from worker.handlers import Registry, StopSignal, load_handlers
from worker.health import LoopWatch, ProbeServer
from worker.hooks import Hook, Hooks, LogContext, MetricsHook, PodLoad
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
T = TypeVar("T")


class _Stopped(Exception):
    """SIGTERM arrived before the worker was ready."""


def _unanswered(exc: Exception) -> bool:
    """A JetStream API request that went unanswered or found nobody to answer (no leader yet),
    or "JetStream system temporarily unavailable" (10008): worth asking again."""
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError | nats.errors.NoRespondersError):
        return True
    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return True
    return isinstance(exc, consumers.JetStreamApiError) and "(code 10008)" in str(exc)


_RECOVER_ON = (contract.STREAM, "KV_" + contract.STATUS_BUCKET)


@dataclass
class TypeRunner:
    """One task type: its consumer, pipeline, pool and fetch loop."""

    task_type: str
    consumer: consumers.ConsumerHandle
    pipeline: JobPipeline
    pool: Pool[Run]
    loop: FetchLoop


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
        self._keeper: PodDeletionCostKeeper | None = None
        self._deadlines = DeadlineReader(None, "not started")
        self.stopping = StopSignal()  # set when the drain starts: every handler's job.stopping
        self._stop_fetching = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._fetchers: list[asyncio.Task[None]] = []
        self._ranks: Ranks | None = None
        self._recovering: asyncio.Task[None] | None = None
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
                log.error("%s", exc)
                print(f"worker: {exc}", file=sys.stderr)
                return 2
            except Exception:
                return 0 if self.lifecycle.stop.is_set() else 1
            try:
                await self._start(self.nc)
            except _Stopped:  # SIGTERM while JetStream was not answering yet
                return 0
            except broker.BrokerConfigError as exc:
                # An operator has to act: say what and how, exit 2 (a config error), no traceback.
                log.error("%s", exc)
                print(f"worker: {exc}", file=sys.stderr)
                return 2
            self.ready = True
            slots = ", ".join(f"{r.task_type}={r.pool.capacity}" for r in self.runners)
            log.info("worker %s ready: slots %s, http :%d", s.worker_id, slots, probes.port)
            await self.lifecycle.stop.wait()
            await self.drain()
            return 0
        finally:
            await probes.stop()
            self.watch.stop()

    async def _start(self, nc: Client) -> None:
        s = self.settings
        js = nc.jetstream(timeout=5.0)
        layout = await self._until_answered("the stream layout", lambda: streams.ensure_layout(js, s))
        served = [t.name for t in s.served_types]
        await self._until_answered(
            "the payload declarations",
            lambda: payload.declare(js, served, self.handlers.payload, s.worker_id),
        )
        requests = self.requests = await Requester(nc).start()
        # A reply that can no longer come (its connection is gone) fails now, not at its timeout.
        self.link.on_lost(requests.connection_lost)
        transport = NatsTransport(nc, requests)
        recovery = Recovery(self.timing.recovery_window_s)
        self._keeper = PodDeletionCostKeeper.from_settings(s)
        if self._keeper is not None:
            self.load.on_change = self._keeper.update
        self.metrics.pod_deletion_cost.set_function(self.load.cost)
        self._deadlines = DeadlineReader.from_settings(s, self._keeper.pod if self._keeper else None)
        # Before ready: a SIGTERM right after must find the client built (that takes ~1 s).
        await self._deadlines.prepare()
        # The cancel markers before any fetch: a first delivery of a generated id reads no status,
        # only this set, so an order cancelled while it waited must be in it when it arrives.
        self._spawn("cancel-markers", lambda: self.cancels.watch(js))
        while not self.cancels.loaded.is_set() and not self.lifecycle.stop.is_set():
            if not await wait_any(self.cancels.loaded.wait(), self.lifecycle.stop.wait(), timeout_s=5.0):
                log.warning(
                    "cancel markers (KV %s) not loaded yet; not fetching before", contract.CANCELS_BUCKET
                )
        for task_type in s.served_types:
            consumer = await self._until_answered(
                f"consumer of {task_type.name}",
                functools.partial(consumers.ensure_consumer, nc, s, task_type.name),
            )
            # Paced from ack_wait as the server has it (an operator may have edited it).
            timing = Timing.derive(s, consumer.ack_wait_s)
            self.timing = timing
            limits = Limits(
                s.max_deliver,
                s.max_crashes,
                s.max_deliveries,
                s.retry_base_s,
                s.retry_max_s,
                timing.reschedule_after_s,
                unstarted_delay_s=timing.fetch_expiry_s,
            )
            hooks = Hooks(MetricsHook(self.metrics, task_type.name), self.load, *self._tracing(consumer.name))
            path = build(
                task_type.name,
                self.handlers.get(task_type.name),
                transport,
                hooks,
                timing,
                limits,
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
            self.runners.append(TypeRunner(task_type.name, consumer, pipeline, pool, loop))
            self.metrics.in_flight.labels(task_type.name).set_function(_counter(pool.running))
            self.metrics.pool_slots.labels(task_type.name).set(pool.capacity)
            self._spawn(f"ticker-{task_type.name}", pool.ticker)
            self._fetchers.append(
                asyncio.create_task(
                    self._supervised(f"fetch-{task_type.name}", loop), name=f"fetch-{task_type.name}"
                )
            )
            self._spawn(f"consumer-info-{consumer.name}", functools.partial(self._sample, js, consumer.name))
        self._spawn("store-info", functools.partial(self._sample_store, js, layout.caps))
        if any(r.consumer.priority for r in self.runners):
            ranks = self._ranks = Ranks(
                s.worker_id,
                self.timing.rank_refresh_s,
                self.timing.rank_ttl_s,
                self._set_priority,
                leave_s=self.timing.rank_leave_s,
                facts=self._rank_facts,
            )
            self._spawn("ranks", lambda: ranks.run(js))
        else:
            self.metrics.pull_priority.set(-1)
        if self._keeper is not None:
            keeper = self._keeper
            self._spawn("pod-deletion-cost", lambda: keeper.run(self._stop_fetching))
            self._spawn("pod-deletion-cost-refresh", self._refresh_cost)
        self.metrics.draining.set(0)
        await nc.subscribe(contract.CONTROL_CANCEL, cb=self._on_cancel)
        # A stream or consumer leader change (a cluster failover) may come with redeliveries a
        # restored consumer did not know were running: treat it like a reconnect. Any stream's new
        # leader also means a write sent to its old one is never answered: those are sent again.
        await nc.subscribe(f"{_STREAM_LEADER_ELECTED}.*", cb=self._on_leader)
        await nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{contract.STREAM}.*", cb=self._on_leader
        )

    async def _until_answered(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """JetStream not answering yet is waited out, not a crash: a worker (re)started while a
        stream has no leader (4-9 s of a cluster's election) or while the cluster forms would
        otherwise exit 1 and go into the kubelet's crash-loop back-off. Config errors still raise."""
        delay_s = 0.5
        while True:
            try:
                return await call()
            except Exception as exc:
                if not _unanswered(exc):
                    raise
                log.warning(
                    "JetStream does not answer yet for %s (%r); retrying in %.1fs", what, exc, delay_s
                )
            if await wait_any(self.lifecycle.stop.wait(), timeout_s=delay_s):
                raise _Stopped
            delay_s = min(2 * delay_s, 5.0)

    def _tracing(self, consumer: str) -> tuple[Hook, ...]:
        """The hooks that lead from logs and traces to the order, only where they are asked for."""
        logs = (LogContext(),) if self.settings.log_format == "json" else ()
        if self.tracer is None:
            return logs
        from worker.tracing import TracingHook  # imports OpenTelemetry: only when tracing is on

        return (*logs, TracingHook(self.tracer, self.settings.worker_id, consumer))

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        async def body() -> None:
            await factory()

        self._background.append(asyncio.create_task(body(), name=name))

    async def _supervised(self, name: str, loop: FetchLoop) -> None:
        while not self._stop_fetching.is_set():
            try:
                await loop.run(self._stop_fetching)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.slot_restarts.labels("fetch").inc()
                log.exception("%s crashed; restarting it", name)
                await asyncio.sleep(0.5)

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
            "deletion_cost": self._keeper.applied if self._keeper else None,
        }

    async def _sample_store(self, js: JetStreamContext, caps: Caps) -> None:
        """How full the store and ORDERS are, against their caps (orderflow/capacity.py)."""
        m = self.metrics
        m.store_limit.set(max(0, caps.store_bytes))
        m.stream_limit.labels(contract.STREAM).set(max(0, caps.of(contract.STREAM)))
        orders = m.stream_bytes.labels(contract.STREAM)
        while True:
            with contextlib.suppress(Exception):
                account = await js.account_info()
                m.store_used.set(account.storage / max(1, self.settings.stream_replicas))
                orders.set((await js.stream_info(contract.STREAM)).state.bytes or 0)
            await asyncio.sleep(self.settings.consumer_info_interval_s)

    async def _sample(self, js: JetStreamContext, consumer: str) -> None:
        pending = self.metrics.consumer_pending.labels(consumer)
        ack_pending = self.metrics.consumer_ack_pending.labels(consumer)
        paused = self.metrics.consumer_paused.labels(consumer)
        while True:
            with contextlib.suppress(Exception):
                info = await js.consumer_info(contract.STREAM, consumer)
                pending.set(info.num_pending or 0)
                ack_pending.set(info.num_ack_pending or 0)
                paused.set(1 if info.paused else 0)  # `orderflow pause` (nats-server 2.11+)
            await asyncio.sleep(self.settings.consumer_info_interval_s)

    async def _refresh_cost(self) -> None:
        """The work at stake grows while jobs run: look again every interval."""
        assert self._keeper is not None
        while True:
            self._keeper.update(self.load.cost())
            await asyncio.sleep(max(0.5, self.settings.pod_deletion_cost_min_interval_s))

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
        if self._recovering is not None and not self._recovering.done():
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

        self._recovering = asyncio.create_task(recover(), name="recover")

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

    # --- drain ----------------------------------------------------------------------------------
    async def drain(self) -> None:
        t = self.timing
        started = time.monotonic()
        pools = [r.pool for r in self.runners]
        running_at_start = sum(len(p.running) for p in pools)
        self.draining = True
        self.metrics.draining.set(1)
        # Phase 0: the deadline. The pod's own deletion (read within a second) says when the
        # SIGKILL comes; leaving the ranks runs meanwhile (both are bounded by about a second).
        reading = asyncio.create_task(self._deadlines.deadline(t, started))
        if self._ranks is not None and self.nc is not None:
            await self._ranks.leave(self.nc.jetstream())
        clock, why = await reading
        deadline = started + clock.drain_s
        hand_back_at = started + clock.hand_back_s
        self.metrics.drain_deadline.labels(clock.ruled_by).set(clock.drain_s)
        self.stopping.set(hand_back_at)  # job.stopping, job.deadline_s
        report = drainreport.DrainReport(
            event="draining",
            worker_id=self.settings.worker_id,
            running_at_sigterm=running_at_start,
            deadline_s=round(clock.drain_s, 3),
            ruled_by=clock.ruled_by,
            why=why,
        )
        report_path = drainreport.path_of(self.settings)
        drainreport.write(report_path, report)
        log.info(
            "draining: %d jobs running, deadline %.1fs by the %s (%s; budget %.0fs)",
            running_at_start,
            clock.drain_s,
            clock.ruled_by,
            why,
            t.drain_timeout_s,
        )

        # Phase 1: stop fetching at once. A pull request already out ends within fetch_expiry_s;
        # what it still brings is given back unstarted. In the background: with a short grace the
        # hand-back may be due before the open requests have ended.
        self._stop_fetching.set()
        closing = asyncio.create_task(self._close_fetching(hand_back_at))

        # Phase 2: let running jobs finish; heartbeats keep flowing. Ends early on a second signal.
        idle = asyncio.gather(*(p.wait_idle() for p in pools), return_exceptions=True)
        await wait_any(idle, self.lifecycle.force.wait(), timeout_s=max(0.0, hand_back_at - time.monotonic()))

        # Phase 3: hand back what still runs, so another worker starts it now, not after ack_wait.
        # Each handler is cancelled and gets unwind_s to checkpoint while it unwinds.
        stopping = [slot for p in pools for slot in p]
        for p in pools:
            for slot in p:
                p.stop(slot, Kind.HANDED_BACK, unwind_s=clock.unwind_s)
        tasks = [slot.task for slot in stopping if slot.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
        unstarted = await closing
        # The settles no job's task carries (a crashed slot's, each unstarted delivery's give-back),
        # and an adopted delivery's in_progress: their acks and naks go out before the connection.
        side = [task for r in self.runners for task in r.pipeline.side_tasks]
        if side:
            await asyncio.wait(side, timeout=max(1.0, deadline - time.monotonic()))

        # Phase 4: every task the worker started off (tickers, watchers, fetch loops, a recovery's
        # re-leases), then the request mux (every status write is answered or given up by now),
        # then drain the connection (flushes acks and naks).
        recovering = [self._recovering] if self._recovering is not None else []
        started_here = [*self._background, *self._fetchers, *recovering]
        stuck = await cancel_all(started_here, self.timing.cancel_within_s)
        if stuck:
            log.warning("drain: %s did not stop when cancelled; left behind", ", ".join(sorted(stuck)))
        if self.requests is not None:
            await self.requests.stop()
        if self._keeper is not None:
            self._keeper.update(0)
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain(), timeout=t.nats_drain_timeout_s)
        self.metrics.draining.set(0)
        report = msgspec.structs.replace(
            report,
            event="drained",
            drained_in_s=round(time.monotonic() - started, 3),
            handed_back_at_deadline=len(stopping),
            unstarted=unstarted,
            handed_back_by_handlers=sum(r.pipeline.handed_back_by_handlers for r in self.runners),
        )
        drainreport.write(report_path, report)
        log.info(
            "drained in %.1fs: %d running at SIGTERM, %d handed back at the deadline, %d fetched but "
            "never started, %d handed back by their handlers; deadline %.1fs by the %s",
            report.drained_in_s,
            running_at_start,
            report.handed_back_at_deadline,
            unstarted,
            report.handed_back_by_handlers,
            clock.drain_s,
            clock.ruled_by,
        )

    async def _close_fetching(self, hand_back_at: float) -> int:
        """Phase 1: the fetch loops end (bounded by the hand-back too), then their open requests are
        waited out and what they bring is given back; returns how many deliveries that was."""
        if self._fetchers:
            within_s = min(self.timing.fetch_expiry_s + 2.0, max(0.0, hand_back_at - time.monotonic()))
            await asyncio.wait(self._fetchers, timeout=within_s)
        for task in self._fetchers:
            task.cancel()
        await asyncio.gather(*(r.loop.close() for r in self.runners), return_exceptions=True)
        return sum(r.loop.unstarted for r in self.runners)


async def cancel_all(tasks: Sequence[asyncio.Task[None]], within_s: float) -> list[str]:
    """Cancel `tasks` and wait until they are done, cancelling again any that carries on: Python
    3.11's asyncio.wait_for returns a result that arrives together with the cancel and drops the
    cancel (gh-86296), and nats-py's request waits with it, so a loop that was in a request (the
    consumer-info sampler) went on forever and the drain never ended (the long-job chaos
    rehearsal's kubelet SIGKILLed such pods at the end of their grace). Returns the names of the
    tasks still running after `within_s`."""
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + within_s
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.2, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
    return [t.get_name() for t in pending]


def _counter(running: Mapping[int, object]) -> Callable[[], float]:
    return lambda: float(len(running))
