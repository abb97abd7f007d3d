"""Every Prometheus metric of orderflow, defined once.

Each service builds its own set on its own registry, so a test can run several in one process
and an ingest does not export worker series. Dashboards, alert rules and docs use these names.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.multiprocess import MultiProcessCollector

# The `_created` companions double every series and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Latency buckets: the ingest answers in sub-millisecond to a few ms; publishes likewise.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Jobs run from milliseconds (no-op) to hours (the seed's external calls).
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)


class SiblingsCollector(MultiProcessCollector):
    """prometheus_client's multi-process collector, minus the files a sibling is still creating.
    MmapedDict opens (creates) its file and only then sizes it; a scrape that reads the empty file
    in between fails ("unpack_from requires a buffer of at least 4 bytes"). A file, once sized,
    never shrinks, so skipping the empty ones leaves no such window. A live gauge's file removed
    by the supervisor (its process died) between the listing and the read: list again."""

    def collect(self) -> Iterable[Any]:
        attempts = 3
        while True:
            files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _sized(f)]
            try:
                return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]
            except FileNotFoundError:
                attempts -= 1
                if not attempts:
                    raise


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:  # gone: its process was marked dead meanwhile
        return False


def _work_done(registry: CollectorRegistry) -> Counter:
    # One definition for both services: in direct mode the ingest does the work inline.
    return Counter(
        "orderflow_work_done",
        "Jobs finished, by status (done|error): the seed's Work Done.",
        ["status"],
        registry=registry,
    )


class IngestMetrics:
    """With ORDERFLOW_INGEST_PROCESSES > 1 the supervisor sets PROMETHEUS_MULTIPROC_DIR for its
    children: values then live in shared files and `exposition` sums every process, so a scrape
    of any one process reports the whole pod."""

    def __init__(self, registry: CollectorRegistry, multiprocess_dir: str | None = None) -> None:
        self.registry = registry
        self.multiprocess = multiprocess_dir is not None
        if multiprocess_dir is not None:
            self.exposition = CollectorRegistry()
            SiblingsCollector(self.exposition, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            self.exposition = registry
        self.http_requests = Counter(
            "orderflow_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "orderflow_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.orders_published = Counter(
            "orderflow_orders_published",
            "Orders offered to JetStream, by result: stored, duplicate (idempotent retry), "
            "unavailable (NATS down), timeout, rejected (stream refused), overloaded (too many in flight).",
            ["result"],
            registry=registry,
        )
        self.publish_duration = Histogram(
            "orderflow_publish_duration_seconds",
            "Time from publish to JetStream PubAck.",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.publish_inflight = Gauge(
            "orderflow_publish_inflight",
            "Publishes awaiting their PubAck.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.orders_refused = Counter(
            "orderflow_orders_refused",
            "Orders answered 503 (not stored), by reason: nats_down, jetstream_unavailable, "
            "publish_timeout, stream_full (a stream limit), storage_full (JetStream out of storage), "
            "rejected (another JetStream error), overloaded (too many publishes in flight); and requests "
            "refused at the edge for their head: head_too_large and too_many_headers (431), "
            "url_too_long (414).",
            ["reason"],
            registry=registry,
        )
        self.idempotent_requests = Counter(
            "orderflow_idempotent_requests",
            "Orders with an Idempotency-Key, by outcome: new, retry (an earlier attempt failed), "
            "replay (answered from the key record), mismatch (422), in_flight (409), unavailable (503).",
            ["outcome"],
            registry=registry,
        )
        self.http_request_timeouts = Counter(
            "orderflow_http_request_timeouts",
            "Connections closed because a request was not received in time, by phase (headers|body).",
            ["phase"],
            registry=registry,
        )
        self.http_connections_refused = Counter(
            "orderflow_http_connections_refused",
            "Connections answered 503 and closed because the process had its maximum open.",
            registry=registry,
        )
        # direct mode does the work inline: the seed's "Work Done" comes from the ingest then.
        self.work_done = _work_done(registry)
        self.shutting_down = Gauge(
            "orderflow_shutting_down",
            "1 while the ingest is shutting down (readiness 503).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.waiters = Gauge(
            "orderflow_waiters",
            "Clients waiting on an order now (GET /orders/{id}?wait= and /events), all on one KV watch "
            "per process; capped by ORDERFLOW_MAX_WAITERS.",
            registry=registry,
            multiprocess_mode="livesum",
        )


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.work_done = _work_done(registry)
        self.in_flight = Gauge(
            "orderflow_tasks_in_flight", "Jobs running now, by task type.", ["type"], registry=registry
        )
        self.task_duration = Histogram(
            "orderflow_task_duration_seconds",
            "Time from delivery to settlement, by task type and outcome (done, retry, timeout, poison, "
            "dead, cancelled, handed_back, already_done, running_elsewhere, unstarted, ...).",
            ["type", "outcome"],
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        self.attempts = Histogram(
            "orderflow_task_attempts",
            "Deliveries of each order whose handler started, this one included (1 = first delivery).",
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self.redeliveries = Counter(
            "orderflow_redeliveries", "Messages received with a delivery count above 1.", registry=registry
        )
        self.dead_letters = Counter(
            "orderflow_dead_letters", "Messages copied to ORDERS_DLQ and terminated.", registry=registry
        )
        self.pool_slots = Gauge(
            "orderflow_pool_slots", "Configured worker slots, by task type.", ["type"], registry=registry
        )
        self.draining = Gauge(
            "orderflow_draining", "1 while the worker drains after SIGTERM.", registry=registry
        )
        self.handed_back = Counter(
            "orderflow_drain_handed_back",
            "Jobs given back to the queue by a drain (deadline reached or forced) or delivered after "
            "fetching stopped; none of these is a failed attempt.",
            registry=registry,
        )
        self.drain_deadline = Gauge(
            "orderflow_drain_deadline_seconds",
            "The drain's deadline in seconds from SIGTERM, by the deadline that ruled: budget "
            "(ORDERFLOW_DRAIN_TIMEOUT_S) or pod (the pod's real SIGKILL time less a margin).",
            ["ruled_by"],
            registry=registry,
        )
        self.slot_restarts = Counter(
            "orderflow_slot_restarts",
            "Slots or fetch loops that crashed and were restarted by the supervisor.",
            ["kind"],
            registry=registry,
        )
        self.consumer_pending = Gauge(
            "orderflow_consumer_pending",
            "Messages not yet delivered to any worker (consumer info num_pending).",
            ["consumer"],
            registry=registry,
        )
        self.consumer_ack_pending = Gauge(
            "orderflow_consumer_ack_pending",
            "Messages delivered and not yet acknowledged (consumer info num_ack_pending).",
            ["consumer"],
            registry=registry,
        )
        self.consumer_paused = Gauge(
            "orderflow_consumer_paused",
            "1 while the consumer is paused (`orderflow pause`): its orders stay queued, none is taken.",
            ["consumer"],
            registry=registry,
        )
        # The store (orderflow/capacity.py), sampled with the consumer info: the alert at 80 %.
        self.store_used = Gauge(
            "orderflow_store_used_bytes",
            "JetStream file storage the account uses, per replica (account info).",
            registry=registry,
        )
        self.store_limit = Gauge(
            "orderflow_store_limit_bytes",
            "The store orderflow's streams share: the account's limit or ORDERFLOW_STORE_MAX_BYTES "
            "(0: unknown, streams uncapped).",
            registry=registry,
        )
        self.stream_bytes = Gauge(
            "orderflow_stream_bytes",
            "Bytes a stream holds (ORDERS: the backlog).",
            ["stream"],
            registry=registry,
        )
        self.stream_limit = Gauge(
            "orderflow_stream_limit_bytes",
            "A stream's cap, its share of the store (0: none); ORDERS full: the ingest answers 503.",
            ["stream"],
            registry=registry,
        )
        self.heartbeats = Counter(
            "orderflow_heartbeats",
            "in_progress acknowledgements sent for running jobs (by the heartbeat ticker, and with each lease or checkpoint write).",
            registry=registry,
        )
        self.cancelled = Counter("orderflow_cancelled", "Jobs cancelled on request.", registry=registry)
        self.deduplicated = Counter(
            "orderflow_deduplicated",
            "Messages acked without running because the order was already done or cancelled.",
            registry=registry,
        )
        self.checkpoints = Counter(
            "orderflow_checkpoints", "Checkpoints stored by running jobs.", registry=registry
        )
        self.crashes = Counter(
            "orderflow_crashes",
            "Runs found dead on their next delivery (their worker was killed mid-job: SIGKILL, OOM).",
            registry=registry,
        )
        self.work_redone = Counter(
            "orderflow_work_redone_seconds",
            "Job time lost to interruptions, to be run again: since the last checkpoint (or the start) "
            "of each handed-back job, and of each run found dead (a lower bound), by cause.",
            ["cause"],
            registry=registry,
        )
        self.event_loop_lag = Gauge(
            "orderflow_event_loop_lag_seconds",
            "How late the event loop ran a callback the watchdog thread scheduled (a blocked loop stops heartbeats).",
            registry=registry,
        )
        self.event_loop_block_limit = Gauge(
            "orderflow_event_loop_block_limit_seconds",
            "How long the event loop may go without running before /healthz answers 503 (the liveness "
            "limit: a quarter of the consumer's ack_wait as the server has it).",
            registry=registry,
        )
        self.pod_deletion_cost = Gauge(
            "orderflow_pod_deletion_cost",
            "The pod-deletion-cost this worker wants: 0 idle, else the seconds of work a kill would lose, "
            "rounded down to a power of two.",
            registry=registry,
        )
        self.pull_priority = Gauge(
            "orderflow_pull_priority",
            "This worker's pull priority (0 = the oldest worker, served first; -1 = no priority group).",
            registry=registry,
        )
