"""The streams: ORDERS (the work queue), ORDER_RETRIES (scheduled messages: delayed orders and long
retry delays), ORDERS_DLQ and ORDER_RUNS; and `ensure_layout`, which creates or updates them and
the KV buckets (buckets.py) at start-up. When the server holds a different config, say exactly what
differs; refuse to start on differences JetStream cannot edit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from orderflow import buckets, capacity, contract, drift
from orderflow.broker import BrokerConfigError
from orderflow.capacity import Caps
from orderflow.config import Settings

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


def stream_configs(settings: Settings, caps: Caps | None = None) -> list[jsapi.StreamConfig]:
    """Every stream; `caps` (orderflow/capacity.py) gives each its share of the store."""
    caps = caps or capacity.derive(-1, "unknown", settings.stream_max_bytes)

    def kept(
        name: str, subjects: tuple[str, ...], max_age_s: float, discard: jsapi.DiscardPolicy, **extra: Any
    ) -> jsapi.StreamConfig:
        """A stream that keeps its messages up to an age (limits retention), on file."""
        return jsapi.StreamConfig(
            name=name,
            subjects=list(subjects),
            retention=jsapi.RetentionPolicy.LIMITS,
            storage=jsapi.StorageType.FILE,
            discard=discard,
            max_bytes=caps.of(name),
            max_age=max_age_s,
            duplicate_window=settings.duplicate_window_s,
            num_replicas=settings.stream_replicas,
            **extra,
        )

    return [
        kept(
            contract.RETRIES_STREAM,
            contract.RETRIES_SUBJECTS,
            max(86400.0, 2 * settings.retry_max_s),
            # Message scheduling needs discard-old and roll-ups (nats-server). A schedule lives here
            # until it fires; the fired copy is sourced into ORDERS within milliseconds.
            jsapi.DiscardPolicy.OLD,
            allow_rollup_hdrs=True,
            allow_msg_schedules=True,
            # Direct gets find a delayed order's schedule by its subject (orderflow/lookup.py).
            allow_direct=True,
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
        # Full: dead-lettering fails and the order stays queued; never drop a dead letter.
        kept(contract.DLQ_STREAM, contract.DLQ_SUBJECTS, settings.dlq_max_age_s, jsapi.DiscardPolicy.NEW),
        kept(contract.RUNS_STREAM, contract.RUNS_SUBJECTS, settings.runs_max_age_s, jsapi.DiscardPolicy.OLD),
    ]


async def ensure_stream(js: JetStreamContext, want: jsapi.StreamConfig, may_change: bool = True) -> None:
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)
        log.info("created stream %s", want.name)
        return
    want = drift.not_below_contents(want, info)
    diffs = drift.diff(want, info.config, _COMPARED_STREAM)
    if not diffs:
        return
    fixed = [d for d in diffs if d[0] in _IMMUTABLE_STREAM]
    if fixed:
        raise BrokerConfigError(
            drift.describe(f"stream {want.name}", fixed)
            + " — JetStream cannot change this; migrate or delete the stream"
        )
    if not may_change:
        log.warning("%s — left for the workers to update", drift.describe(f"stream {want.name}", diffs))
        return
    await js.update_stream(want)
    log.warning("%s — updated", drift.describe(f"stream {want.name}", diffs))


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
    for bucket in buckets.bucket_configs(settings, caps):
        await buckets.ensure_bucket(js, bucket, may_change)
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
