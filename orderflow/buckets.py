"""The KV buckets: ORDER_STATUS (each order's status record), ORDER_CANCELS, ORDER_WORKERS (who is
alive), ORDER_KEYS (Idempotency-Key records) and ORDER_TYPES (declared payloads), each created or
brought to orderflow's TTL, replicas and share of the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js import api as jsapi
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from orderflow import capacity, contract, drift
from orderflow.capacity import Caps
from orderflow.config import Settings

log = logging.getLogger(__name__)

KEYS_BUCKET = contract.KEYS_BUCKET
KEYS_SUBJECT_PREFIX = f"$KV.{contract.KEYS_BUCKET}."

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
                drift.norm(have.storage),
                drift.norm(want.storage),
            )
            return
        log.warning(
            "KV %s: storage %s on the server, orderflow wants %s — JetStream cannot change it; left as it is",
            want.bucket,
            drift.norm(have.storage),
            drift.norm(want.storage),
        )
    if drift.norm(have.max_age) != drift.norm(want.ttl) or have.num_replicas != want.replicas:
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
    sized = drift.not_below_contents(
        have.evolve(max_bytes=want.max_bytes, discard=_discard(want.bucket)), info
    )
    if drift.norm(have.max_bytes) != drift.norm(sized.max_bytes) or drift.norm(have.discard) != drift.norm(
        sized.discard
    ):
        await js.update_stream(sized)
        log.info("KV %s: max_bytes %s, discard %s", want.bucket, sized.max_bytes, drift.norm(sized.discard))


async def follow_bucket(
    js: JetStreamContext,
    bucket: str,
    seen: Callable[[KeyValue.Entry | None], None],
    logger: logging.Logger,
    what: str,
    failure_level: int = logging.WARNING,
) -> None:
    """Until cancelled: every entry of KV `bucket` to `seen`, the ones already there first, then
    None (the current contents are in), then each change as it comes. After an error (NATS lost or
    restarted): a line on `logger` at `failure_level`, and a new watch 1 s later."""
    while True:
        try:
            kv = await js.key_value(bucket)
            watcher = await kv.watchall()
            try:
                async for entry in watcher:
                    seen(entry)
            finally:
                # Unsubscribe, so that the server reclaims the watch's consumer when it is left
                # behind (a new watch starts after a NATS restart).
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.log(failure_level, "%s: watch of KV %s failed (%r); again in 1 s", what, bucket, exc)
            await asyncio.sleep(1.0)
