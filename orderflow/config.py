"""Settings: every ORDERFLOW_* setting as one frozen object, read once at start-up
(orderflow/envsettings.py reads and checks them) and passed in; with the values derived from them,
never configured twice. Nothing reads the environment anywhere else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from orderflow import natsauth

Service = Literal["ingest", "worker", "cli"]
PriorityMode = Literal["auto", "off"]


@dataclass(frozen=True)
class WorkRange:
    """Simulated work of the demo handler: a fixed `0.5` or a uniform range `1-30` seconds."""

    min_s: float
    max_s: float

    def __str__(self) -> str:
        return f"{self.min_s:g}" if self.min_s == self.max_s else f"{self.min_s:g}-{self.max_s:g}"


@dataclass(frozen=True)
class TaskType:
    """A task type is a subject under `orders.` with its own pool size and hard timeout."""

    name: str
    concurrency: int
    timeout_s: float


@dataclass(frozen=True)
class Settings:
    service: Service = "cli"
    # NATS
    nats_urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    # Identity and TLS (orderflow/natsauth.py): files, mounted from Secrets, checked at start-up.
    # The password and token are read from their _FILE; the plain env values are discouraged.
    nats_user: str | None = None
    nats_password: str | None = field(default=None, repr=False)
    nats_password_file: str | None = None
    nats_token: str | None = field(default=None, repr=False)
    nats_token_file: str | None = None
    nats_creds_file: str | None = None
    nats_nkey_seed_file: str | None = None
    nats_ca_file: str | None = None
    nats_cert_file: str | None = None
    nats_key_file: str | None = None
    # The name the server's certificate must carry when it differs from the URL's host.
    nats_tls_hostname: str | None = None
    connect_timeout_s: float = 5.0
    # How long a service's last step, draining its NATS connection (flushing acks, naks and
    # publishes), may take. The chart's grace periods count it once.
    nats_drain_timeout_s: float = 5.0
    # stream layout
    stream_replicas: int = 1
    duplicate_window_s: float = 120.0
    stream_max_msgs: int = -1
    stream_max_bytes: int = -1
    # The JetStream file store orderflow's streams share (the server's max_file_store), for a
    # server whose account reports no storage limit: every stream's cap derives from it
    # (orderflow/capacity.py). -1: unknown.
    store_max_bytes: int = -1
    dlq_max_age_s: float = 14 * 86400.0
    status_ttl_s: float = 7 * 86400.0
    runs_max_age_s: float = 86400.0
    task_types: tuple[TaskType, ...] = (TaskType("default", 16, 3600.0),)
    # The task types this worker runs (ORDERFLOW_WORKER_TYPES); empty: all of them. Consumer names
    # still follow task_types (workers-<type> when there are several), so a worker of a Deployment
    # of its own (the chart's worker.ownDeployments) takes the same consumer as any other.
    worker_types: tuple[str, ...] = ()
    # HTTP listener
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    log_level: str = "info"
    log_format: str = "text"  # json: one object a line with order_id, trace_id, span_id
    # Receipt deadlines (uvicorn has none): the request head within header_timeout_s of its first
    # byte (of the connection, for a first request), the body within body_timeout_s of the head.
    # 10 s fits a 16 KiB body at 1.6 KB/s, a poor mobile uplink.
    http_header_timeout_s: float = 5.0
    http_body_timeout_s: float = 10.0
    # Open connections per process; past it a new connection is answered 503 and closed.
    http_max_connections: int = 4096
    # Bounded request heads (uvicorn has none): request line + headers (431), the number of
    # headers (431), the URL (414). Counted before the parser buffers them.
    http_max_head_bytes: int = 16 * 1024
    http_max_headers: int = 100
    http_max_url_bytes: int = 8 * 1024
    # ingest: /metrics on a port of its own, never on the API port (scrapers need no API key,
    # and clients of the API get no view of the service's internals).
    metrics_port: int = 9180
    # API keys (orderflow/auth.py): a mounted file, re-read every api_keys_reload_s. Unset, the
    # ingest runs open, which it does only on a loopback address unless auth_open says so.
    api_keys_file: str | None = None
    api_keys_reload_s: float = 5.0
    auth_open: bool = False
    # prometheus_client's own switch (not ORDERFLOW_*): set by ingest/multiproc.py for its children.
    prometheus_multiproc_dir: str | None = None
    # ingest
    mode: str = "queued"
    rate_limit_rps: float = 50.0
    # The publish budget: how long POST /orders may wait for its PubAck, retries through a
    # failover included. It covers a JetStream leader election: after a stream leader's node dies
    # the others elect a new one once raft's election timeout runs out, random in 4-9 s
    # (nats-server's raft.go, not configurable); meanwhile writes wait for a slower 200, not a 503.
    publish_timeout_s: float = 10.0
    max_inflight_publishes: int = 10_000
    # POST /orders/batch: at most this many orders (nats-server's atomic batch holds 1 000 at
    # most) in a body of at most this many bytes (413 past it; POST /orders keeps its 16 KiB).
    batch_max_orders: int = 1000
    batch_max_bytes: int = 4 * 1024 * 1024
    retry_after_s: int = 1
    # Refused orders (503) are logged as one summary line per interval, never one per request.
    refusal_log_interval_s: float = 10.0
    shutdown_delay_s: float = 5.0
    shutdown_timeout_s: float = 10.0
    ingest_processes: int = 1
    # GET /orders/{id}?wait= and /events: clients waiting at once per process (one KV watch
    # serves them all); past it 503 + Retry-After. A waiter costs a task and a queue, a few KiB.
    max_waiters: int = 2000
    # Listen only once connected to NATS (the multi-process supervisor sets it for its children,
    # so SO_REUSEPORT never hands a connection to a process that would answer 503).
    bind_when_ready: bool = False
    # worker
    concurrency: int = 16
    ack_wait_s: float = 30.0
    task_timeout_s: float = 3600.0
    drain_timeout_s: float = 60.0
    # Failed attempts (handler error, timeout) before dead-lettering; hand-backs, lease deferrals
    # and late deliveries are not attempts. ORDERFLOW_MAX_ATTEMPTS is the clearer alias.
    max_deliver: int = 5
    # Runs whose worker died mid-job (SIGKILL, OOM) before dead-lettering.
    max_crashes: int = 3
    # A safety cap on deliveries of any kind.
    max_deliveries: int = 100
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    # The furthest ahead a delayed order (`not_before`, `delay_s`) may be scheduled; below the
    # retries stream's one-day max_age, which would drop a schedule before it fires.
    max_delay_s: float = 3600.0
    fetch_expiry_s: float = 1.0
    max_ack_pending: int = 20_000
    consumer_info_interval_s: float = 5.0
    # Pull priority by age (consumer priority groups, nats-server 2.12): the oldest workers take
    # the work first, so when load falls the newest run dry and are the ones to scale away.
    priority: PriorityMode = "auto"
    handlers: tuple[str, ...] = ("worker.demo",)
    worker_id: str = ""
    work_s: WorkRange = WorkRange(0.5, 0.5)
    work_fail_rate: float = 0.0
    # The demo handler checkpoints its progress and resumes from it; off, every run of an order
    # starts over (the chaos rehearsal measures the work redone both ways).
    work_checkpoints: bool = True
    pod_name: str | None = None
    pod_namespace: str | None = None
    pod_deletion_cost: str = "auto"  # auto (on inside a cluster) | on | off
    pod_deletion_cost_min_interval_s: float = 5.0
    # On SIGTERM read this pod's deletionTimestamp and drain against the real SIGKILL time when it
    # is sooner than the budget: auto (inside a cluster) | on (also outside, through KUBECONFIG) | off.
    pod_deadline: str = "auto"
    # Where the drain writes its figures (worker/drainreport.py): auto (/dev/termination-log inside
    # a cluster, nowhere outside) | off | a path.
    termination_log: str = "auto"
    # Kubernetes' own variables (not ORDERFLOW_*): set inside a pod, with the API server's address;
    # outside one, the kubeconfig the `on` modes talk to the API server with.
    kubernetes_service_host: str | None = None
    kubeconfig: str | None = None
    # Signed callbacks (orderflow/callbackurl.py, worker/callback.py): the hosts a callback_url may
    # name (empty: callbacks refused), http besides https, private/loopback/link-local addresses
    # (tests, an in-cluster receiver; metadata addresses never), one attempt's bound, and the
    # Standard Webhooks secret (`whsec_...`) read from a file, never from an env value.
    callback_hosts: tuple[str, ...] = ()
    callback_allow_http: bool = False
    callback_allow_private: bool = False
    callback_timeout_s: float = 10.0
    callback_secret_file: str | None = None
    # worker: the API keys' own secrets, a file per key's `webhook_secret` (a mounted Secret)
    callback_secrets_dir: str | None = None
    callback_secret: str | None = field(default=None, repr=False)

    # --- derived, never configured twice --------------------------------------------------
    @property
    def split_types(self) -> bool:
        """One durable consumer per task type when more than one type is configured."""
        return len(self.task_types) > 1

    @property
    def idempotency_ttl_s(self) -> float:
        """Idempotency-Key records (KV ORDER_KEYS) live as long as an order's status: a key must
        not be forgotten while the order it names is still known (ingest/keys.py)."""
        return self.status_ttl_s

    @property
    def served_types(self) -> tuple[TaskType, ...]:
        """The task types this worker runs: ORDERFLOW_WORKER_TYPES, else every configured one."""
        if not self.worker_types:
            return self.task_types
        return tuple(t for t in self.task_types if t.name in self.worker_types)

    @property
    def max_attempts(self) -> int:
        return self.max_deliver

    def nats_options(self) -> dict[str, Any]:
        """nats-py's connect options: servers, TLS context, identity."""
        return natsauth.connect_options(self)
