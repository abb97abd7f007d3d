"""NATS connection and JetStream layout: streams ORDERS, ORDERS_DLQ, ORDER_RUNS, KV ORDER_STATUS and
ORDER_KEYS, the durable pull consumers, created or updated idempotently. When the server holds a different
config, say exactly what differs; refuse to start on differences JetStream cannot edit."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from orderflow import contract
from orderflow.config import Settings
from orderflow.link import RECONNECT_WAIT_S, Link

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


# Idempotency-Key records (ingest/keys.py): key -> {fingerprint, order_id, at, claim}.
KEYS_BUCKET = "ORDER_KEYS"
KEYS_SUBJECT_PREFIX = "$KV.ORDER_KEYS."


class BrokerConfigError(Exception):
    """The server's existing stream/consumer cannot be brought to orderflow's config."""


async def connect(settings: Settings, name: str, link: Link | None = None, **extra: Any) -> Client:
    """Connect with endless reconnects: a NATS restart must never need a service restart."""
    link = link or Link()

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("NATS disconnected; reconnecting")
        link.lost()

    async def on_reconnected() -> None:
        url = nc.connected_url
        log.info("NATS reconnected to %s", url.netloc if url else "?")
        link.connected(url.netloc if url else None)

    async def on_error(exc: Exception) -> None:
        log.debug("NATS error: %r", exc)

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
    nc: Client = await nats.connect(**options)
    link.connected(nc.connected_url.netloc if nc.connected_url else None)
    return nc


async def connect_retrying(
    settings: Settings, name: str, stop: asyncio.Event | None = None, link: Link | None = None
) -> Client:
    """Keep trying the first connection (a pod may start before NATS does)."""
    delay = 0.2
    while True:
        try:
            return await connect(settings, name, link)
        except Exception as exc:  # nats raises several unrelated types for "not there yet"
            if stop is not None and stop.is_set():
                raise
            log.warning(
                "cannot reach NATS at %s (%s); retrying in %.1fs", ",".join(settings.nats_urls), exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def stream_configs(settings: Settings) -> list[jsapi.StreamConfig]:
    return [
        jsapi.StreamConfig(
            name=contract.STREAM,
            subjects=list(contract.STREAM_SUBJECTS),
            retention=jsapi.RetentionPolicy.WORK_QUEUE,
            storage=jsapi.StorageType.FILE,
            duplicate_window=settings.duplicate_window_s,
            max_msgs=settings.stream_max_msgs,
            max_bytes=settings.stream_max_bytes,
            # A full stream refuses new orders (the ingest answers 503) rather than dropping old ones.
            discard=jsapi.DiscardPolicy.NEW,
            num_replicas=settings.stream_replicas,
            # Direct gets find a queued order by its subject (orders.*.<id>) without a status record.
            allow_direct=True,
        ),
        jsapi.StreamConfig(
            name=contract.DLQ_STREAM,
            subjects=list(contract.DLQ_SUBJECTS),
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            max_age=settings.dlq_max_age_s,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
        jsapi.StreamConfig(
            name=contract.RUNS_STREAM,
            subjects=list(contract.RUNS_SUBJECTS),
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            max_age=settings.runs_max_age_s,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
        ),
    ]


def _norm(value: Any) -> Any:
    if hasattr(value, "value"):  # enums
        return value.value
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


async def ensure_stream(js: JetStreamContext, want: jsapi.StreamConfig) -> None:
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        log.info("created stream %s", want.name)
        return
    diffs = _diff(want, info.config, _COMPARED_STREAM)
    if not diffs:
        return
    fixed = [d for d in diffs if d[0] in _IMMUTABLE_STREAM]
    if fixed:
        raise BrokerConfigError(
            _describe(f"stream {want.name}", fixed)
            + " — JetStream cannot change this; migrate or delete the stream"
        )
    await js.update_stream(want)
    log.warning("%s — updated", _describe(f"stream {want.name}", diffs))


async def ensure_bucket(js: JetStreamContext, bucket: str, ttl_s: float, settings: Settings) -> None:
    """A KV bucket with one value per key, entries living ttl_s, direct gets allowed."""
    want = jsapi.KeyValueConfig(
        bucket=bucket,
        history=1,
        ttl=ttl_s,
        storage=jsapi.StorageType.FILE,
        replicas=settings.stream_replicas,
        direct=True,
    )
    try:
        info = await js.stream_info("KV_" + bucket)
    except NotFoundError:
        await js.create_key_value(want)
        log.info("created KV bucket %s", bucket)
        return
    have = info.config
    if _norm(have.max_age) != _norm(ttl_s) or have.num_replicas != settings.stream_replicas:
        cfg = have.evolve(max_age=ttl_s, num_replicas=settings.stream_replicas)
        await js.update_stream(cfg)
        log.warning(
            "KV %s: ttl %rs / replicas %r on the server, orderflow wants %rs / %r — updated",
            bucket,
            have.max_age,
            have.num_replicas,
            ttl_s,
            settings.stream_replicas,
        )


async def ensure_status_bucket(js: JetStreamContext, settings: Settings) -> None:
    await ensure_bucket(js, contract.STATUS_BUCKET, settings.status_ttl_s, settings)


async def ensure_layout(js: JetStreamContext, settings: Settings) -> None:
    """Streams and KV, idempotently. Safe to run from every pod at start-up."""
    for cfg in stream_configs(settings):
        await ensure_stream(js, cfg)
    await ensure_status_bucket(js, settings)
    await ensure_bucket(js, KEYS_BUCKET, settings.idempotency_ttl_s, settings)


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


async def ensure_consumer(js: JetStreamContext, settings: Settings, task_type: str) -> ConsumerHandle:
    want = consumer_config(settings, task_type)
    assert want.durable_name is not None
    try:
        info = await js.consumer_info(contract.STREAM, want.durable_name)
        diffs = _diff(want, info.config, _COMPARED_CONSUMER)
        if diffs:
            # ack_wait, max_deliver, max_ack_pending, backoff are editable; filter changes need 2.10+.
            info = await js.add_consumer(contract.STREAM, want)
            log.warning("%s — updated", _describe(f"consumer {want.durable_name}", diffs))
    except NotFoundError:
        info = await js.add_consumer(contract.STREAM, want)
        log.info(
            "created consumer %s (filter %s)", want.durable_name, want.filter_subject or want.filter_subjects
        )
    ack_wait = info.config.ack_wait or settings.ack_wait_s
    return ConsumerHandle(task_type, want.durable_name, float(ack_wait))
