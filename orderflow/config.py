"""Settings: read once from ORDERFLOW_* at start-up into a frozen object, validated with one clear
message per bad value. Nothing reads the environment anywhere else."""

from __future__ import annotations

import base64
import os
import re
import socket
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from orderflow import auth, natsauth

PREFIX = "ORDERFLOW_"
Service = Literal["ingest", "worker", "cli"]
PriorityMode = Literal["auto", "off"]
DEFAULT_HTTP_PORT: dict[str, int] = {"ingest": 8080, "worker": 9090, "cli": 0}
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

T = TypeVar("T")


class ConfigError(Exception):
    """Raised with every bad setting at once; str() is the message to print."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


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


# --- parsing ---------------------------------------------------------------------------------
def _number(kind: Callable[[str], T], lo: float | None = None, hi: float | None = None) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"not a{'n integer' if kind is int else ' number'}") from None
        if lo is not None and value < lo:  # type: ignore[operator]
            raise ValueError(f"must be >= {lo:g}")
        if hi is not None and value > hi:  # type: ignore[operator]
            raise ValueError(f"must be <= {hi:g}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _urls(raw: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    if not urls:
        raise ValueError("needs at least one nats:// URL")
    for u in urls:
        if not re.match(r"^(nats|tls|ws|wss)://[^\s/]+$", u):
            raise ValueError(f"{u!r} is not a NATS URL like nats://host:4222")
    return urls


def parse_work(raw: str) -> WorkRange:
    m = re.match(r"^\s*([0-9.]+)\s*(?:-\s*([0-9.]+))?\s*$", raw)
    try:
        lo = float(m.group(1)) if m else -1.0
        hi = float(m.group(2)) if m and m.group(2) else lo
    except ValueError:
        lo = hi = -1.0
    if lo < 0 or hi < lo:
        raise ValueError("must be seconds like 0.5 or a range min-max like 1-30")
    return WorkRange(lo, hi)


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError("must be true or false")
    return value in ("1", "true", "yes")


def _list(raw: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in raw.split(",") if x.strip())
    if not items:
        raise ValueError("must not be empty")
    return items


# env suffix -> (field, parser)
_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "NATS_URL": ("nats_urls", _urls),
    "NATS_USER": ("nats_user", str),
    "NATS_PASSWORD": ("nats_password", str),
    "NATS_TOKEN": ("nats_token", str),
    "NATS_TLS_HOSTNAME": ("nats_tls_hostname", str),
    "CONNECT_TIMEOUT_S": ("connect_timeout_s", _number(float, 0.1)),
    "NATS_DRAIN_TIMEOUT_S": ("nats_drain_timeout_s", _number(float, 0.1, 600)),
    "STREAM_REPLICAS": ("stream_replicas", _number(int, 1, 5)),
    "DUPLICATE_WINDOW_S": ("duplicate_window_s", _number(float, 120)),
    "STREAM_MAX_MSGS": ("stream_max_msgs", _number(int, -1)),
    "STREAM_MAX_BYTES": ("stream_max_bytes", _number(int, -1)),
    "STORE_MAX_BYTES": ("store_max_bytes", _number(int, -1)),
    "DLQ_MAX_AGE_S": ("dlq_max_age_s", _number(float, 0)),
    "STATUS_TTL_S": ("status_ttl_s", _number(float, 0)),
    "RUNS_MAX_AGE_S": ("runs_max_age_s", _number(float, 0)),
    "HTTP_HOST": ("http_host", str),
    "HTTP_PORT": ("http_port", _number(int, 0, 65535)),
    "LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error")),
    "LOG_FORMAT": ("log_format", _choice("text", "json")),
    "HTTP_HEADER_TIMEOUT_S": ("http_header_timeout_s", _number(float, 0.1, 600)),
    "HTTP_BODY_TIMEOUT_S": ("http_body_timeout_s", _number(float, 0.1, 3600)),
    "HTTP_MAX_CONNECTIONS": ("http_max_connections", _number(int, 1, 1_000_000)),
    "HTTP_MAX_HEAD_BYTES": ("http_max_head_bytes", _number(int, 1024, 1024 * 1024)),
    "HTTP_MAX_HEADERS": ("http_max_headers", _number(int, 1, 10_000)),
    "HTTP_MAX_URL_BYTES": ("http_max_url_bytes", _number(int, 256, 1024 * 1024)),
    "METRICS_PORT": ("metrics_port", _number(int, 0, 65535)),
    "API_KEYS_FILE": ("api_keys_file", str),
    "API_KEYS_RELOAD_S": ("api_keys_reload_s", _number(float, 0.1, 3600)),
    "AUTH_OPEN": ("auth_open", _boolean),
    "MODE": ("mode", _choice("queued", "direct")),
    "RATE_LIMIT_RPS": ("rate_limit_rps", _number(float, 0.1)),
    "PUBLISH_TIMEOUT_S": ("publish_timeout_s", _number(float, 0.05, 60)),
    "MAX_INFLIGHT_PUBLISHES": ("max_inflight_publishes", _number(int, 1)),
    "BATCH_MAX_ORDERS": ("batch_max_orders", _number(int, 1, 1000)),
    "BATCH_MAX_BYTES": ("batch_max_bytes", _number(int, 1024, 64 * 1024 * 1024)),
    "RETRY_AFTER_S": ("retry_after_s", _number(int, 1, 3600)),
    "REFUSAL_LOG_INTERVAL_S": ("refusal_log_interval_s", _number(float, 0.1, 3600)),
    "SHUTDOWN_DELAY_S": ("shutdown_delay_s", _number(float, 0, 300)),
    "SHUTDOWN_TIMEOUT_S": ("shutdown_timeout_s", _number(float, 0.1, 600)),
    "INGEST_PROCESSES": ("ingest_processes", _number(int, 1, 256)),
    "MAX_WAITERS": ("max_waiters", _number(int, 0, 1_000_000)),
    "BIND_WHEN_READY": ("bind_when_ready", _boolean),
    "CONCURRENCY": ("concurrency", _number(int, 1, 10_000)),
    "ACK_WAIT_S": ("ack_wait_s", _number(float, 1, 86400)),
    "TASK_TIMEOUT_S": ("task_timeout_s", _number(float, 0.01)),
    "DRAIN_TIMEOUT_S": ("drain_timeout_s", _number(float, 1, 86400)),
    "MAX_DELIVER": ("max_deliver", _number(int, 1, 1000)),
    "MAX_CRASHES": ("max_crashes", _number(int, 1, 1000)),
    "MAX_DELIVERIES": ("max_deliveries", _number(int, 2, 100_000)),
    "RETRY_BASE_S": ("retry_base_s", _number(float, 0.01)),
    "RETRY_MAX_S": ("retry_max_s", _number(float, 0.01)),
    "MAX_DELAY_S": ("max_delay_s", _number(float, 1, 82800)),
    "FETCH_EXPIRY_S": ("fetch_expiry_s", _number(float, 0.1, 30)),
    "MAX_ACK_PENDING": ("max_ack_pending", _number(int, -1)),
    "CONSUMER_INFO_INTERVAL_S": ("consumer_info_interval_s", _number(float, 0.1)),
    "PRIORITY": ("priority", _choice("auto", "off")),
    "HANDLERS": ("handlers", _list),
    "WORKER_TYPES": ("worker_types", _list),
    "WORKER_ID": ("worker_id", str),
    "WORK_S": ("work_s", parse_work),
    "WORK_FAIL_RATE": ("work_fail_rate", _number(float, 0, 1)),
    "WORK_CHECKPOINTS": ("work_checkpoints", _boolean),
    "POD_NAME": ("pod_name", str),
    "POD_NAMESPACE": ("pod_namespace", str),
    "POD_DELETION_COST": ("pod_deletion_cost", _choice("auto", "on", "off")),
    "POD_DELETION_COST_MIN_INTERVAL_S": ("pod_deletion_cost_min_interval_s", _number(float, 0)),
    "POD_DEADLINE": ("pod_deadline", _choice("auto", "on", "off")),
    "CALLBACK_HOSTS": ("callback_hosts", _list),
    "CALLBACK_ALLOW_HTTP": ("callback_allow_http", _boolean),
    "CALLBACK_ALLOW_PRIVATE": ("callback_allow_private", _boolean),
    "CALLBACK_TIMEOUT_S": ("callback_timeout_s", _number(float, 0.1, 60)),
    "CALLBACK_SECRET_FILE": ("callback_secret_file", str),
    "CALLBACK_SECRETS_DIR": ("callback_secrets_dir", str),
}
# TASK_TYPES is parsed after CONCURRENCY and TASK_TIMEOUT_S, whose values are its defaults.
# MAX_ATTEMPTS is MAX_DELIVER's clearer name (failed attempts, not deliveries); either works.
# The NATS file settings (natsauth.FILE_SETTINGS) are checked by natsauth.load.
# Settings that are gone, with what replaced them (named, not reported as a typo).
REMOVED = {
    "IDEMPOTENCY_TTL_S": "removed: an Idempotency-Key is remembered as long as its order's status "
    f"({PREFIX}STATUS_TTL_S)",
}
KNOWN = {*_PARSERS, *natsauth.FILE_SETTINGS, *REMOVED, "TASK_TYPES", "MAX_ATTEMPTS"}


def _task_types(raw: str, concurrency: int, timeout_s: float) -> tuple[TaskType, ...]:
    """`name[:concurrency[:timeout_s]]`, comma-separated, e.g. `default,report:2:7200`."""
    out: list[TaskType] = []
    for item in _list(raw):
        parts = item.split(":")
        if len(parts) > 3 or not _TYPE_RE.match(parts[0]):
            raise ValueError(f"{item!r}: expected name[:concurrency[:timeout_s]] with a lowercase name")
        conc = _number(int, 1, 10_000)(parts[1]) if len(parts) > 1 else concurrency
        tmo = _number(float, 0.01)(parts[2]) if len(parts) > 2 else timeout_s
        if any(t.name == parts[0] for t in out):
            raise ValueError(f"task type {parts[0]!r} given twice")
        out.append(TaskType(parts[0], conc, tmo))
    return tuple(out)


def _auth_problems(values: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """The ingest's identity settings: a key file that parses now (read again by the ingest, and
    re-read as it changes), or an open ingest that only loopback clients can reach unless told."""
    keys_file = values.get("api_keys_file")
    host = values.get("http_host", defaults["http_host"])
    problems: list[str] = []
    if keys_file:
        problem = auth.file_problem(keys_file)
        if problem:
            problems.append(f"{PREFIX}API_KEYS_FILE: {problem}")
    elif not values.get("auth_open") and not auth.is_loopback(host):
        problems.append(
            f"{PREFIX}API_KEYS_FILE is not set and {PREFIX}HTTP_HOST={host} is not a loopback address: "
            f"refusing to take orders from anyone without a key (mint one: orderflow keys new NAME; "
            f"or set {PREFIX}AUTH_OPEN=true to run open on purpose)"
        )
    metrics_port = values.get("metrics_port", defaults["metrics_port"])
    if metrics_port and metrics_port == values.get("http_port"):
        problems.append(f"{PREFIX}METRICS_PORT must differ from {PREFIX}HTTP_PORT ({metrics_port})")
    return problems


def _callback_secret(values: dict[str, Any], problems: list[str]) -> None:
    """The Standard Webhooks secret, `whsec_` + base64 of 24-64 bytes, read from its file; a
    problem names the file, never its content."""
    folder = values.get("callback_secrets_dir")
    if folder and not os.path.isdir(folder):
        problems.append(f"{PREFIX}CALLBACK_SECRETS_DIR={folder!r}: not a directory")
    path = values.get("callback_secret_file")
    if not path:
        return
    try:
        values["callback_secret"] = read_webhook_secret(path)
    except ValueError as exc:
        problems.append(f"{PREFIX}CALLBACK_SECRET_FILE={path!r}: {exc}")


def read_webhook_secret(path: str) -> str:
    """A Standard Webhooks secret file's `whsec_...`; ValueError naming the problem, never the
    content (the worker reads a key's own secret file with it too)."""
    try:
        with open(path, encoding="ascii") as f:
            secret = f.read(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read ({type(exc).__name__})") from None
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not secret.startswith("whsec_") or not 24 <= len(key) <= 64:
        raise ValueError("must hold whsec_ followed by the base64 of 24 to 64 random bytes")
    return secret


def load_settings(service: Service, env: Mapping[str, str] | None = None) -> Settings:
    """Read ORDERFLOW_* once. Raises ConfigError listing every bad value."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {"service": service, "http_port": DEFAULT_HTTP_PORT[service]}
    problems: list[str] = []
    for suffix, (name, parse) in _PARSERS.items():
        raw = env.get(PREFIX + suffix)
        if raw is None or raw == "":
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            problems.append(f"{PREFIX}{suffix}={raw!r}: {exc}")
    defaults = {f.name: f.default for f in fields(Settings)}
    concurrency = values.get("concurrency", defaults["concurrency"])
    timeout_s = values.get("task_timeout_s", defaults["task_timeout_s"])
    try:
        values["task_types"] = _task_types(
            env.get(PREFIX + "TASK_TYPES") or "default", concurrency, timeout_s
        )
    except ValueError as exc:
        problems.append(f"{PREFIX}TASK_TYPES={env.get(PREFIX + 'TASK_TYPES')!r}: {exc}")
    known_types = {t.name for t in values.get("task_types", ())}
    strangers = [t for t in values.get("worker_types", ()) if known_types and t not in known_types]
    if strangers:
        problems.append(
            f"{PREFIX}WORKER_TYPES names {', '.join(strangers)}, not in {PREFIX}TASK_TYPES "
            f"({', '.join(sorted(known_types))})"
        )
    raw_attempts = env.get(PREFIX + "MAX_ATTEMPTS")
    if raw_attempts:
        try:
            attempts = _number(int, 1, 1000)(raw_attempts)
        except ValueError as exc:
            problems.append(f"{PREFIX}MAX_ATTEMPTS={raw_attempts!r}: {exc}")
        else:
            if "max_deliver" in values and values["max_deliver"] != attempts:
                problems.append(
                    f"{PREFIX}MAX_ATTEMPTS={attempts} and {PREFIX}MAX_DELIVER={values['max_deliver']} "
                    "disagree (they are one setting; give one)"
                )
            values["max_deliver"] = attempts
    unknown = sorted(k for k in env if k.startswith(PREFIX) and k[len(PREFIX) :] not in KNOWN)
    problems += [f"{k}: unknown setting (typo?)" for k in unknown]
    problems += [f"{PREFIX}{k}: {why}" for k, why in REMOVED.items() if env.get(PREFIX + k)]
    retry_base = values.get("retry_base_s", defaults["retry_base_s"])
    if values.get("retry_max_s", defaults["retry_max_s"]) < retry_base:
        problems.append(f"{PREFIX}RETRY_MAX_S must be >= {PREFIX}RETRY_BASE_S")
    natsauth.load(env, PREFIX, values, problems)
    _callback_secret(values, problems)
    if bool(values.get("nats_user")) != bool(values.get("nats_password")):
        problems.append(f"{PREFIX}NATS_USER and {PREFIX}NATS_PASSWORD go together")
    if service == "ingest":
        problems += _auth_problems(values, defaults)
    if problems:
        raise ConfigError(problems)
    values["kubernetes_service_host"] = env.get("KUBERNETES_SERVICE_HOST") or None
    values["kubeconfig"] = env.get("KUBECONFIG") or None
    values["prometheus_multiproc_dir"] = env.get("PROMETHEUS_MULTIPROC_DIR") or None
    if not values.get("worker_id"):
        values["worker_id"] = values.get("pod_name") or f"{socket.gethostname()}-{os.getpid()}"
    return Settings(**values)


def command_line(service: Service, argv: Sequence[str], about: str) -> int | None:
    """`python -m ingest|worker [--help]`: the services take no arguments, only ORDERFLOW_*
    variables. Returns the exit code when the command line was all there was to do (--help: the
    usage and every setting's name, 0; anything else: a message, 2), None to start the service."""
    if not argv:
        return None
    if list(argv) in (["-h"], ["--help"]):
        names = ", ".join(PREFIX + name for name in sorted(KNOWN))
        how = (
            "It takes no arguments: environment variables configure it, read once at start-up (a "
            'bad value is named and the process exits 2; the README\'s "Settings" says what each '
            "means):"
        )
        paragraphs = (f"usage: python -m {service}", about, how, names)
        print("\n\n".join(textwrap.fill(p, 88) for p in paragraphs))
        return 0
    print(
        f"{service}: takes no arguments, only ORDERFLOW_* variables (python -m {service} --help "
        f"lists them); got {' '.join(argv)!r}",
        file=sys.stderr,
    )
    return 2
