"""NATS connection and JetStream layout: streams ORDERS, ORDERS_DLQ, ORDER_RUNS, KV ORDER_STATUS and
ORDER_KEYS, the durable pull consumers, created or updated idempotently. When the server holds a different
config, say exactly what differs; refuse to start on differences JetStream cannot edit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from orderflow import capacity, contract, natsauth
from orderflow.capacity import Caps
from orderflow.config import Settings
from orderflow.lifecycle import wait_any
from orderflow.link import RECONNECT_WAIT_S, Link
from orderflow.logsummary import SummaryLog

log = logging.getLogger(__name__)

# JetStream cannot change these on an existing stream; a difference needs an operator.
_IMMUTABLE_STREAM = ("retention", "storage")
_COMPARED_STREAM = (
    "subjects",
    "retention",
    "storage",
    "duplicate_window",
    "max_msgs",
    "max_bytes",
    "max_age",
    "discard",
    "num_replicas",
    "allow_direct",
    "allow_msg_schedules",
    "allow_atomic",
    "sources",
)
_COMPARED_CONSUMER = (
    "ack_policy",
    "ack_wait",
    "max_deliver",
    "filter_subject",
    "filter_subjects",
    "max_ack_pending",
    "backoff",
)


KEYS_BUCKET = contract.KEYS_BUCKET
KEYS_SUBJECT_PREFIX = f"$KV.{contract.KEYS_BUCKET}."


class BrokerConfigError(Exception):
    """The server's existing stream/consumer cannot be brought to orderflow's config."""


class Stopped(Exception):
    """A stop was asked for before the first connection: nothing to serve, nothing to drain."""


async def connect(
    settings: Settings,
    name: str,
    link: Link | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_first_error: Callable[[Exception], None] | None = None,
    **extra: Any,
) -> Client:
    """Connect with endless reconnects: a NATS restart must never need a service restart. A server
    that refuses us (TLS, credentials) is final: NatsAccessError, at once, never a retry loop. With
    endless reconnects nats-py tries the *first* connection forever too, inside `nats.connect`,
    reporting each failure only to the error callback: `on_first_error` gets those."""
    link = link or Link()
    nc = Client()
    servers = natsauth.redact_urls(settings.nats_urls)
    last_refusal: list[str] = []
    denied: set[str] = set()

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected; reconnecting")
        link.lost()

    async def on_reconnected() -> None:
        url = nc.connected_url
        log.info("NATS reconnected to %s", natsauth.redact(url.netloc) if url else "?")
        link.connected(url.netloc if url else None)
        if on_reconnect is not None:
            await on_reconnect()

    async def on_error(exc: Exception) -> None:
        if "permissions violation" in str(exc).lower():
            # A subject this identity may not use: the request times out, the reason only comes
            # here. Said once per subject (a few dozen at most), at error: the identity needs it.
            text = natsauth.redact(str(exc))
            if text not in denied and len(denied) < 64:
                denied.add(text)
                log.error("NATS refused it: %s (docs/kubernetes.md lists each identity's permissions)", text)
            return
        problem = natsauth.access_problem(exc)
        first = not nc.is_connected and nc.connected_url is None and not nc.is_reconnecting
        if problem is None:
            if first and on_first_error is not None:
                on_first_error(exc)
            else:
                log.debug("NATS error: %s", natsauth.redact(repr(exc)))
        elif first:
            # The first connect: nats-py would retry it forever; raising here ends its loop.
            raise natsauth.NatsAccessError(f"NATS at {servers} refused the connection: {problem}")
        elif last_refusal != [problem]:  # a reconnect refused: said once per reason, retried
            last_refusal[:] = [problem]
            log.error("NATS at %s refused the reconnect: %s", servers, problem)

    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": RECONNECT_WAIT_S,
        "reconnect_to_server_handler": link.pick,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "error_cb": on_error,
        **settings.nats_options(),
        **extra,
    }
    if "tls" in options:
        for key in ("password", "token"):
            if isinstance(options.get(key), str):
                options[key] = _only_over_tls(nc, options[key])
    try:
        await nc.connect(**options)
        if "tls" in options and not nc._server_info.get("tls_required"):
            raise natsauth.NatsAccessError(f"NATS at {servers} refused the connection: {_PlaintextServer()}")
    except natsauth.NatsAccessError:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1.0)
        raise
    link.connected(nc.connected_url.netloc if nc.connected_url else None)
    return nc


class _PlaintextServer(nats.errors.Error):
    """A server that does not ask for TLS while orderflow has a CA or client certificate set."""

    def __str__(self) -> str:
        return natsauth.PLAINTEXT_SERVER


def _only_over_tls(nc: Client, secret: str) -> Callable[[], str]:
    """The password or token as nats-py's callback, given only on a TLS connection. nats-py
    upgrades to TLS only when the server's INFO asks for it, whatever the URL's scheme: a server
    without TLS (misconfigured, or a downgrade on the way) would get the secret in plaintext. A
    nats error, so a reconnect tries the next server and the first connect stops (access_problem)."""

    def give() -> str:
        if not nc._server_info.get("tls_required"):
            raise _PlaintextServer()
        return secret

    return give


async def connect_retrying(
    settings: Settings,
    name: str,
    stop: asyncio.Event | None = None,
    link: Link | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Keep trying the first connection (a pod may start before NATS does), saying so once per
    `refusal_log_interval_s` with the URL (redacted) and the reason; `stop` set meanwhile raises
    Stopped at once (nats-py's own first-connection loop never looks at a signal). A refusal (TLS,
    credentials: NatsAccessError) is raised at once."""
    stop = stop or asyncio.Event()
    urls = natsauth.redact_urls(settings.nats_urls)
    failures = SummaryLog(log, f"cannot reach NATS at {urls}", settings.refusal_log_interval_s)

    def failed(exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        failures.note(natsauth.redact(reason))

    delay = 0.2
    while True:
        attempt = asyncio.ensure_future(connect(settings, name, link, on_reconnect, failed))
        await wait_any(attempt, stop.wait())  # cancels the attempt if stop came first
        if not attempt.done() or attempt.cancelled():
            raise Stopped
        exc = attempt.exception()
        if exc is None:
            failures.flush()
            return attempt.result()
        if isinstance(exc, natsauth.NatsAccessError):
            raise exc
        # nats-py raises a few unrelated types for "not there yet" outside its own loop
        failed(exc)
        if await wait_any(stop.wait(), timeout_s=delay):
            raise Stopped
        delay = min(delay * 2, 5.0)


def stream_configs(settings: Settings, caps: Caps | None = None) -> list[jsapi.StreamConfig]:
    """Every stream; `caps` (orderflow/capacity.py) gives each its share of the store."""
    caps = caps or capacity.derive(-1, "unknown", settings.stream_max_bytes)
    return [
        jsapi.StreamConfig(
            name=contract.RETRIES_STREAM,
            subjects=list(contract.RETRIES_SUBJECTS),
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            # Message scheduling needs discard-old and roll-ups (nats-server). A schedule lives here
            # until it fires; the fired copy is sourced into ORDERS within milliseconds.
            discard=jsapi.DiscardPolicy.OLD,
            allow_rollup_hdrs=True,
            allow_msg_schedules=True,
            # Direct gets find a delayed order's schedule by its subject (orderflow/lookup.py).
            allow_direct=True,
            max_bytes=caps.of(contract.RETRIES_STREAM),
            max_age=max(86400.0, 2 * settings.retry_max_s),
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
        jsapi.StreamConfig(
            name=contract.STREAM,
            subjects=list(contract.STREAM_SUBJECTS),
            retention=jsapi.RetentionPolicy.WORK_QUEUE,
            storage=jsapi.StorageType.FILE,
            duplicate_window=settings.duplicate_window_s,
            max_msgs=settings.stream_max_msgs,
            max_bytes=caps.of(contract.STREAM),
            # A full stream refuses new orders (the ingest answers 503) rather than dropping old ones.
            discard=jsapi.DiscardPolicy.NEW,
            num_replicas=settings.stream_replicas,
            # Direct gets find a queued order by its subject (orders.*.<id>) without a status record.
            allow_direct=True,
            # POST /orders/batch stores a batch all or nothing (nats-server 2.12+, ingest/batch.py).
            allow_atomic=True,
            # Long retry delays wait as scheduled messages in ORDER_RETRIES, not as ack-pending
            # here; when one fires, its copy comes back as orders.<type>.<id>.
            sources=[
                jsapi.StreamSource(
                    name=contract.RETRIES_STREAM,
                    subject_transforms=[
                        jsapi.SubjectTransform(
                            src=contract.RETRY_PREFIX + ">", dest=contract.SUBJECT_PREFIX + ">"
                        )
                    ],
                )
            ],
        ),
        jsapi.StreamConfig(
            name=contract.DLQ_STREAM,
            subjects=list(contract.DLQ_SUBJECTS),
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            max_age=settings.dlq_max_age_s,
            max_bytes=caps.of(contract.DLQ_STREAM),
            # Full: dead-lettering fails and the order stays queued; never drop a dead letter.
            discard=jsapi.DiscardPolicy.NEW,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
        jsapi.StreamConfig(
            name=contract.RUNS_STREAM,
            subjects=list(contract.RUNS_SUBJECTS),
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            max_age=settings.runs_max_age_s,
            max_bytes=caps.of(contract.RUNS_STREAM),
            discard=jsapi.DiscardPolicy.OLD,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
    ]


def _norm(value: Any) -> Any:
    if hasattr(value, "value"):  # enums
        return value.value
    if isinstance(value, list) and value and isinstance(value[0], jsapi.StreamSource):
        return [
            (s.name, s.filter_subject or None, [(t.src, t.dest) for t in s.subject_transforms or []])
            for s in value
        ]
    if isinstance(value, float):
        return round(value, 3)
    if value in (None, 0, -1, []):  # unset and "unlimited" read back in several spellings
        return None
    return value


def _diff(want: Any, have: Any, keys: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    out = []
    for key in keys:
        w, h = _norm(getattr(want, key, None)), _norm(getattr(have, key, None))
        if getattr(want, key, None) is None:
            continue  # not ours to decide: server default
        if w != h:
            out.append((key, h, w))
    return out


def _describe(what: str, diffs: list[tuple[str, Any, Any]]) -> str:
    return f"{what}: " + "; ".join(f"{k} is {h!r} on the server, orderflow wants {w!r}" for k, h, w in diffs)


def _not_below_contents(want: jsapi.StreamConfig, info: jsapi.StreamInfo) -> jsapi.StreamConfig:
    """A cap below what a stream holds would make the server delete its oldest messages at once
    (queued orders, whatever the discard policy): keep what is there, say so."""
    held = info.state.bytes or 0
    if want.max_bytes is not None and 0 < want.max_bytes < held:
        log.warning(
            "stream %s holds %d bytes, more than its share of the store (%d): capped at what it holds "
            "until it shrinks (next start-up)",
            want.name,
            held,
            want.max_bytes,
        )
        return want.evolve(max_bytes=held)
    return want


async def ensure_stream(js: JetStreamContext, want: jsapi.StreamConfig, may_change: bool = True) -> None:
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        log.info("created stream %s", want.name)
        return
    want = _not_below_contents(want, info)
    diffs = _diff(want, info.config, _COMPARED_STREAM)
    if not diffs:
        return
    fixed = [d for d in diffs if d[0] in _IMMUTABLE_STREAM]
    if fixed:
        raise BrokerConfigError(
            _describe(f"stream {want.name}", fixed)
            + " — JetStream cannot change this; migrate or delete the stream"
        )
    if not may_change:
        log.warning("%s — left for the workers to update", _describe(f"stream {want.name}", diffs))
        return
    await js.update_stream(want)
    log.warning("%s — updated", _describe(f"stream {want.name}", diffs))


# Buckets whose contents every worker writes again within seconds: a config JetStream cannot edit
# is fixed by deleting and making them again.
_DISPOSABLE_BUCKETS = frozenset({contract.WORKERS_BUCKET})


def bucket_configs(settings: Settings, caps: Caps | None = None) -> list[jsapi.KeyValueConfig]:
    caps = caps or capacity.derive(-1, "unknown")

    def bucket(name: str, ttl_s: float, storage: jsapi.StorageType, replicas: int) -> jsapi.KeyValueConfig:
        return jsapi.KeyValueConfig(
            bucket=name,
            history=1,
            ttl=ttl_s,
            storage=storage,
            replicas=replicas,
            direct=True,
            max_bytes=caps.of("KV_" + name),
        )

    r = settings.stream_replicas
    return [
        bucket(contract.STATUS_BUCKET, settings.status_ttl_s, jsapi.StorageType.FILE, r),
        # Markers for orders cancelled before any worker got them; one lives as long as a status.
        bucket(contract.CANCELS_BUCKET, settings.status_ttl_s, jsapi.StorageType.FILE, r),
        # Who is alive, and since when: refreshed every 2 s, forgotten 6 s after the last refresh.
        # On file, not in memory: a memory stream is gone after a NATS restart and nobody makes it
        # again, so every refresh failed and each worker saw the others vanish and pulled at
        # priority 0 until it stopped (found by the chaos rehearsal; tests/worker/test_priority.py).
        bucket(contract.WORKERS_BUCKET, 6.0, jsapi.StorageType.FILE, r),
        # Idempotency-Key records (ingest/keys.py): one per keyed order, for the key's lifetime.
        bucket(KEYS_BUCKET, settings.idempotency_ttl_s, jsapi.StorageType.FILE, r),
        # Each task type's payload as its workers declare it (orderflow/payloads.py); kept for good
        # (no TTL): an ingest started while no worker runs still checks orders by it.
        bucket(contract.TYPES_BUCKET, 0.0, jsapi.StorageType.FILE, r),
    ]


def _discard(bucket: str) -> jsapi.DiscardPolicy:
    return jsapi.DiscardPolicy.OLD if "KV_" + bucket in capacity.DISCARD_OLD else jsapi.DiscardPolicy.NEW


async def ensure_bucket(js: JetStreamContext, want: jsapi.KeyValueConfig, may_change: bool = True) -> None:
    try:
        info = await js.stream_info("KV_" + want.bucket)
    except NotFoundError:
        await js.create_key_value(want)
        log.info("created KV bucket %s", want.bucket)
        info = await js.stream_info("KV_" + want.bucket)  # its cap and discard policy, below
    have = info.config
    if not may_change:
        return  # the ingest's identity may create, never update or delete (docs/kubernetes.md)
    if have.storage != want.storage:
        if want.bucket in _DISPOSABLE_BUCKETS:
            with contextlib.suppress(NotFoundError):  # another process did it first
                await js.delete_key_value(want.bucket)
            await js.create_key_value(want)
            log.warning(
                "KV %s: storage %s on the server, orderflow wants %s — made again (it holds only "
                "seconds of liveness entries)",
                want.bucket,
                _norm(have.storage),
                _norm(want.storage),
            )
            return
        log.warning(
            "KV %s: storage %s on the server, orderflow wants %s — JetStream cannot change it; left as it is",
            want.bucket,
            _norm(have.storage),
            _norm(want.storage),
        )
    if _norm(have.max_age) != _norm(want.ttl) or have.num_replicas != want.replicas:
        cfg = have.evolve(max_age=want.ttl, num_replicas=want.replicas)
        await js.update_stream(cfg)
        log.warning(
            "KV %s: ttl %rs / replicas %r on the server, orderflow wants %rs / %r — updated",
            want.bucket,
            have.max_age,
            have.num_replicas,
            want.ttl,
            want.replicas,
        )
        have = cfg
    # Its share of the store (orderflow/capacity.py), and what it does when that is full.
    sized = _not_below_contents(have.evolve(max_bytes=want.max_bytes, discard=_discard(want.bucket)), info)
    if _norm(have.max_bytes) != _norm(sized.max_bytes) or _norm(have.discard) != _norm(sized.discard):
        await js.update_stream(sized)
        log.info("KV %s: max_bytes %s, discard %s", want.bucket, sized.max_bytes, _norm(sized.discard))


@dataclass(frozen=True)
class Layout:
    """What the server's JetStream can do for us, learned while ensuring the layout."""

    schedules: bool  # ORDERS takes scheduled messages (nats-server 2.12+)
    atomic: bool  # ORDERS takes atomic batches (nats-server 2.12+)
    caps: Caps  # every stream's share of the store (orderflow/capacity.py)


async def ensure_layout(js: JetStreamContext, settings: Settings, may_change: bool = True) -> Layout:
    """Streams and KV, idempotently. Safe to run from every pod at start-up. `may_change=False`
    (the ingest, whose NATS identity may create streams but not update, purge or delete them)
    creates what is missing and leaves differences to the workers."""
    caps = await capacity.learn(js, settings)
    for cfg in stream_configs(settings, caps):
        await ensure_stream(js, cfg, may_change)
    for bucket in bucket_configs(settings, caps):
        await ensure_bucket(js, bucket, may_change)
    info = await js.stream_info(contract.RETRIES_STREAM)
    schedules = bool(info.config.allow_msg_schedules)
    if not schedules:
        log.warning(
            "stream %s does not take scheduled messages (nats-server older than 2.12?): "
            "long retry delays stay nak(delay) and count as ack-pending",
            contract.RETRIES_STREAM,
        )
    atomic = bool((await js.stream_info(contract.STREAM)).config.allow_atomic)
    return Layout(schedules, atomic, caps)


def consumer_config(settings: Settings, task_type: str) -> jsapi.ConsumerConfig:
    split = settings.split_types
    filters = contract.consumer_filters(task_type, split)
    return jsapi.ConsumerConfig(
        durable_name=contract.consumer_name(task_type, split),
        ack_policy=jsapi.AckPolicy.EXPLICIT,
        deliver_policy=jsapi.DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_s,
        # Attempts are counted and dead-lettered by the worker (outcome.py), not by the server:
        # a server-side max_deliver would strand the last failed message in a work-queue stream.
        max_deliver=-1,
        # One filter as `filter_subject`, several as `filter_subjects` (nats-server 2.10+).
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        max_ack_pending=settings.max_ack_pending,
        # No `backoff`: it would override ack_wait for redeliveries; retries use nak(delay).
    )


@dataclass(frozen=True)
class ConsumerHandle:
    task_type: str
    name: str
    ack_wait_s: float  # as the server has it: heartbeats are paced from this
    priority: bool  # pulls may carry a priority: the consumer has orderflow's prioritized group


class JetStreamApiError(Exception):
    pass


async def _api(nc: Client, subject: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JetStream API call with its raw JSON answer (nats-py's dataclasses drop fields it does not
    know, such as the consumer's priority groups)."""
    reply = await nc.request(f"$JS.API.{subject}", json.dumps(request or {}).encode(), timeout=5.0)
    answer: dict[str, Any] = json.loads(reply.data or b"{}")
    error = answer.get("error")
    if error:
        raise JetStreamApiError(f"{error.get('description', error)} (code {error.get('err_code')})")
    return answer


def _priority_diffs(have: dict[str, Any], want: bool) -> list[tuple[str, Any, Any]]:
    groups = have.get("priority_groups") or []
    policy = have.get("priority_policy") or "none"
    want_groups = [contract.PRIORITY_GROUP] if want else []
    want_policy = "prioritized" if want else "none"
    out: list[tuple[str, Any, Any]] = []
    if groups != want_groups:
        out.append(("priority_groups", groups, want_groups))
    if policy != want_policy:
        out.append(("priority_policy", policy, want_policy))
    return out


def subjects_overlap(a: str, b: str) -> bool:
    """Whether two subject filters can match one subject (`*` one token, `>` the rest)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


def _filters(config: dict[str, Any]) -> list[str]:
    return config.get("filter_subjects") or (
        [config["filter_subject"]] if config.get("filter_subject") else [">"]
    )


@dataclass(frozen=True)
class ConsumerConflict:
    name: str
    filters: list[str]
    pending: int
    ack_pending: int
    waiting: int = 0  # open pull requests: a worker is using it right now

    @property
    def idle(self) -> bool:
        return self.pending == 0 and self.ack_pending == 0

    @classmethod
    def of(cls, info: dict[str, Any]) -> ConsumerConflict:
        """From a raw CONSUMER.INFO (or CONSUMER.LIST entry) answer."""
        return cls(
            info["name"],
            _filters(info["config"]),
            info.get("num_pending", 0),
            info.get("num_ack_pending", 0),
            info.get("num_waiting", 0),
        )


async def list_consumers(nc: Client) -> list[ConsumerConflict]:
    """Every consumer on ORDERS with its filters and work ([] while the stream does not exist)."""
    try:
        listing = await _api(nc, f"CONSUMER.LIST.{contract.STREAM}")
    except JetStreamApiError as exc:
        if "(code 10059)" in str(exc):  # stream not found
            return []
        raise
    return [ConsumerConflict.of(info) for info in listing.get("consumers") or []]


async def conflicting_consumers(nc: Client, settings: Settings) -> list[ConsumerConflict]:
    """Consumers on ORDERS that orderflow's configured ones would overlap. A work-queue stream
    takes no two consumers whose filters overlap ("filtered consumer not unique on workqueue
    stream"): switching from one task type (`workers`, every order) to several (`workers-<type>`)
    leaves the old one in the way until it is deleted."""
    ours = {contract.consumer_name(t.name, settings.split_types): t.name for t in settings.task_types}
    wanted = {name: contract.consumer_filters(t, settings.split_types) for name, t in ours.items()}
    return [
        c
        for c in await list_consumers(nc)
        if c.name not in wanted
        and any(subjects_overlap(f, w) for f in c.filters for ws in wanted.values() for w in ws)
    ]


async def delete_idle_consumer(nc: Client, name: str) -> ConsumerConflict:
    """Delete an ORDERS consumer, but only one with no undelivered and no un-acked work (a worker
    still holding its messages could not ack them any more). Raises BrokerConfigError otherwise."""
    c = ConsumerConflict.of(await _api(nc, f"CONSUMER.INFO.{contract.STREAM}.{name}"))
    if not c.idle:
        raise BrokerConfigError(
            f"consumer {name} still has {c.pending} undelivered and {c.ack_pending} un-acked messages; "
            "let the workers that use it finish them (run them with its old ORDERFLOW_TASK_TYPES), then delete it"
        )
    return await delete_consumer(nc, name)


async def delete_consumer(nc: Client, name: str) -> ConsumerConflict:
    """Delete an ORDERS consumer whatever it holds: its messages stay in the stream (work-queue
    retention removes a message only when it is acked) for the consumers that match them. Only
    safe while no worker uses it (`orderflow dev` before it starts its workers); else use
    delete_idle_consumer."""
    c = ConsumerConflict.of(await _api(nc, f"CONSUMER.INFO.{contract.STREAM}.{name}"))
    await _api(nc, f"CONSUMER.DELETE.{contract.STREAM}.{name}")
    return c


async def ensure_consumer(nc: Client, settings: Settings, task_type: str) -> ConsumerHandle:
    """The task type's durable pull consumer, created or brought to orderflow's config. With
    ORDERFLOW_PRIORITY=auto it gets the priority group; a server that cannot (older than 2.12)
    gets the consumer without it, said once, and the worker pulls as before."""
    want = consumer_config(settings, task_type)
    name = want.durable_name
    assert name is not None
    want_priority = settings.priority == "auto"
    conflicts = await conflicting_consumers(nc, settings)
    if conflicts:
        c = conflicts[0]
        raise BrokerConfigError(
            f"consumer {c.name} (filters {', '.join(c.filters)}) overlaps {name} "
            f"({', '.join(contract.consumer_filters(task_type, settings.split_types))}) on the work-queue stream "
            f"{contract.STREAM}, which allows no overlap; it has {c.pending} undelivered and {c.ack_pending} "
            f"un-acked messages. Once both are 0: orderflow consumers delete {c.name}"
        )
    try:
        have: dict[str, Any] | None = (await _api(nc, f"CONSUMER.INFO.{contract.STREAM}.{name}"))["config"]
    except JetStreamApiError as exc:
        if "(code 10014)" not in str(exc):  # consumer not found
            raise
        have = None
    if have is not None:
        diffs = _diff(want, jsapi.ConsumerConfig.from_response(dict(have)), _COMPARED_CONSUMER)
        diffs += _priority_diffs(have, want_priority)
        if not diffs:
            return _handle(task_type, name, have, settings)
    config: dict[str, Any] = {**want.as_dict(), "name": name}
    if want_priority:
        config.update(priority_groups=[contract.PRIORITY_GROUP], priority_policy="prioritized")
    create = f"CONSUMER.CREATE.{contract.STREAM}.{name}"
    try:
        info = await _api(nc, create, {"stream_name": contract.STREAM, "config": config})
    except JetStreamApiError as exc:
        if not want_priority or "priority" not in str(exc).lower():
            raise
        log.warning(
            "consumer %s: this server has no prioritized priority groups (%s); pulling without priority",
            name,
            exc,
        )
        config.pop("priority_groups")
        config.pop("priority_policy")
        info = await _api(nc, create, {"stream_name": contract.STREAM, "config": config})
    if have is None:
        log.info("created consumer %s (filter %s)", name, want.filter_subject or want.filter_subjects)
    else:
        log.warning("%s — updated", _describe(f"consumer {name}", diffs))
    handle = _handle(task_type, name, info["config"], settings)
    if want_priority and not handle.priority:
        log.warning("consumer %s has no priority group on this server; pulling without priority", name)
    return handle


def _handle(task_type: str, name: str, config: dict[str, Any], settings: Settings) -> ConsumerHandle:
    ack_wait_ns = config.get("ack_wait") or int(settings.ack_wait_s * 1e9)
    priority = config.get("priority_policy") == "prioritized" and contract.PRIORITY_GROUP in (
        config.get("priority_groups") or []
    )
    return ConsumerHandle(task_type, name, ack_wait_ns / 1e9, priority)
