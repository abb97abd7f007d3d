"""IngestState: what the routes need, built once per process; its NATS link and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from ingest.access import Access
from ingest.backend import KeyClaims, OrderFinder, OrderSink
from ingest.ids import IdSource
from ingest.keys import IdempotencyKeys
from ingest.payloads import PayloadCatalogue
from ingest.publisher import Publisher, Refusals
from ingest.watch import StatusWatch
from orderflow import broker, contract, streams, tracing
from orderflow.config import Settings
from orderflow.lifecycle import wait_any
from orderflow.link import Link
from orderflow.lookup import OrderLookup
from orderflow.metrics import IngestMetrics
from orderflow.natsmux import Requester

log = logging.getLogger(__name__)

# The stream check is a JetStream API request: made on this period by one task, never per probe,
# so a probe storm cannot turn into an API storm.
STREAM_CHECK_INTERVAL_S = 1.0
# JetStream's advisory subject, one more token: the stream's name.
LEADER_ELECTED = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED"


class IngestState:
    def __init__(self, settings: Settings, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.default_type = settings.task_types[0].name
        self.task_types = {t.name for t in settings.task_types}
        self.catalogue = PayloadCatalogue(self.task_types)
        # type -> its declared payload's schema, read per order; no entry: the seed's order
        self.payloads = self.catalogue.schemas
        self.openapi: tuple[int, bytes] | None = None  # (catalogue version, the document)
        self.new_id = IdSource()
        self.access = Access(settings)
        self.nc: Client | None = None
        self.link = Link()
        self.requests: Requester | None = None
        # the store behind the routes (ingest/backend.py): NATS's parts once connected
        self.publisher: OrderSink | None = None
        self.lookup: OrderFinder | None = None
        self.keys: KeyClaims | None = None
        self._store_up: Callable[[], bool] = lambda: False
        # the one KV watch that every ?wait and /events client of this process shares
        self.watch = StatusWatch(settings.max_waiters, metrics.waiters)
        self.refusals = Refusals(metrics, settings.refusal_log_interval_s)
        # None unless the `otel` extra is installed and the OTEL_* variables ask for traces
        self.tracer = tracing.setup(
            "orderflow-ingest", settings.pod_name or f"{socket.gethostname()}-{os.getpid()}"
        )
        self.shutting_down = False
        self.atomic_batches = False  # ORDERS takes atomic batches (learned at connect)
        self._fatal: str | None = None
        self._stream_problem: str | None = "checking the stream"
        self._stream_check: asyncio.Task[None] | None = None
        self._payload_watch: asyncio.Task[None] | None = None

    # --- probes (orderflow.probes.Probed) ---------------------------------------------------
    @property
    def exposition(self) -> CollectorRegistry:
        return self.metrics.exposition

    def liveness_problem(self) -> str | None:
        return None

    def readiness_problem(self) -> str | None:
        if self.shutting_down:
            return "shutting down"
        if self._fatal:
            return self._fatal
        if self.settings.mode == "direct":
            return None  # direct mode does not need NATS to answer
        if self.nc is None:
            return "NATS not connected"
        if not self.nc.is_connected:
            # A reconnect (to another node, a quick restart) is ridden out by the publishes'
            # budget: an ingest taken out of its Service for it would be out for a probe period
            # at least (failureThreshold 1, periodSeconds 5). Unready once it has lasted longer.
            since = self.link.down_since
            if since is None or time.monotonic() - since >= self.settings.publish_timeout_s:
                return "NATS not connected"
        return self._stream_problem

    @property
    def connected(self) -> bool:
        return self._store_up()

    def attach(
        self, publisher: OrderSink, keys: KeyClaims, lookup: OrderFinder, up: Callable[[], bool]
    ) -> None:
        """The store the routes use from now on; `up` says whether it can be reached now."""
        self.publisher, self.keys, self.lookup, self._store_up = publisher, keys, lookup, up

    # --- the NATS link ------------------------------------------------------------------------
    async def connect(self, stop: asyncio.Event) -> None:
        """Connect (retrying until NATS is there or `stop` is set) and ensure the stream layout.
        A layout JetStream cannot reach is fatal: readiness says why until an operator acts."""
        s = self.settings
        try:
            nc = await broker.connect_retrying(s, f"ingest-{s.worker_id}", stop, self.link)
        except broker.Stopped:
            return  # stopped before NATS was ever there: nothing to drain
        js = nc.jetstream(timeout=s.publish_timeout_s)
        while True:
            try:
                layout = await streams.ensure_layout(js, s, may_change=False)
                self.atomic_batches = layout.atomic
                break
            except broker.BrokerConfigError as exc:
                log.error("%s", exc)
                self._fatal = str(exc)
                await nc.close()
                return
            except Exception as exc:
                log.warning("JetStream not ready (%s); retrying", exc)
                await asyncio.sleep(1.0)
        # The declared payloads before the first order: one checked as the seed's order by mistake
        # would be stored and then dead-lettered by its worker.
        self._payload_watch = asyncio.create_task(self.catalogue.watch(js), name="payload-watch")
        while not self.catalogue.loaded.is_set():
            await wait_any(self.catalogue.loaded.wait(), stop.wait(), timeout_s=5.0)
            if stop.is_set():
                self._payload_watch.cancel()
                await nc.close()
                return
            if not self.catalogue.loaded.is_set():
                log.warning(
                    "payloads (KV %s) not loaded yet; not taking orders before", contract.TYPES_BUCKET
                )
        self.requests = await Requester(nc, s.publish_timeout_s).start()
        self.link.on_lost(self.requests.connection_lost)
        lookup = OrderLookup(self.requests, s.publish_timeout_s)
        publisher = Publisher(
            nc, self.link, self.requests, s, self.metrics, self.refusals, tracer=self.tracer
        )
        keys = IdempotencyKeys(self.requests, publisher, lookup, self.refusals, s.publish_timeout_s)
        self.attach(publisher, keys, lookup, lambda: bool(nc.is_connected))
        try:
            await self.watch.start(js)
        except Exception as exc:  # orders still flow; ?wait and /events answer 503 until a restart
            log.error("status watch (KV %s) not started: %r", contract.STATUS_BUCKET, exc)
        # A stream leader elected (a node lost or restarted): a write that went to the old leader
        # is never answered; fail it now, and the publisher sends it again to the new one inside
        # its budget, rather than letting it wait out the whole budget for a 503.
        await nc.subscribe(f"{LEADER_ELECTED}.*", cb=self._on_leader_elected)
        self._stream_problem = None
        self.nc = nc
        self._stream_check = asyncio.create_task(self._check_stream(nc), name="stream-check")
        log.info("connected to NATS; stream %s ready", contract.STREAM)

    async def _on_leader_elected(self, msg: Msg) -> None:
        if self.requests is not None:
            cut = self.requests.leader_changed()
            # Every stream's creation elects a leader too: say so only when it cost something.
            log.log(
                logging.INFO if cut else logging.DEBUG,
                "stream %s has a new leader; %d writes sent again",
                msg.subject.rsplit(".", 1)[-1],
                cut,
            )

    async def _check_stream(self, nc: Client) -> None:
        """Readiness follows the stream, but not through a leader election: STREAM.INFO goes
        unanswered while a stream has no leader (4-9 s after losing it), and an unready ingest is
        taken out of its Service at once (the chart's failureThreshold is 1), although its
        publishes ride the election out inside their budget. So the stream counts as unreachable
        only once it has been for longer than the publish budget."""
        js = nc.jetstream(timeout=STREAM_CHECK_INTERVAL_S)
        failing_since: float | None = None
        while True:
            await asyncio.sleep(STREAM_CHECK_INTERVAL_S)
            if not nc.is_connected:
                continue  # readiness already says so
            try:
                await js.stream_info(contract.STREAM)
                self._stream_problem = None
                failing_since = None
            except Exception as exc:
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                if now - failing_since >= self.settings.publish_timeout_s:
                    self._stream_problem = f"stream {contract.STREAM} unreachable: {type(exc).__name__}"

    def begin_shutdown(self) -> None:
        self.shutting_down = True
        self.metrics.shutting_down.set(1)

    async def close(self) -> None:
        """Drain the NATS connection: what is buffered is flushed, replies still in flight arrive."""
        for task in (self._stream_check, self._payload_watch):
            if task is not None:
                task.cancel()
        if self.requests is not None:
            await self.requests.stop()
        nc = self.nc
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), timeout=self.settings.nats_drain_timeout_s)
                log.info("NATS connection drained")
            except Exception as exc:
                log.warning("NATS drain did not finish in %gs (%r)", self.settings.nats_drain_timeout_s, exc)
                with contextlib.suppress(Exception):
                    await nc.close()
