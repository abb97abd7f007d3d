"""The declared payloads of the configured task types, as the workers publish them in KV
ORDER_TYPES (orderflow/payloads.py): a watch delivers every declaration at start and each change
after, so a new worker image's schema is checked by the running ingest within moments.

A type with no declaration (no worker has started for it yet, or its handler declares none)
takes the seed's order: the default type's hot path looks up one dict and finds nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from orderflow import buckets, contract
from orderflow.payloads import PayloadSchema, decode_record

log = logging.getLogger(__name__)


class PayloadCatalogue:
    def __init__(self, task_types: Collection[str]) -> None:
        self._types = frozenset(task_types)
        # type -> its declared schema; read per order (orders.py), so a plain dict
        self.schemas: dict[str, PayloadSchema] = {}
        # bumped on every change (the OpenAPI document is rebuilt once per version)
        self.version = 0
        # Set once the watch delivered the declarations there are: until then an order of a
        # declared type would be checked as the seed's order, so the ingest is not ready before.
        self.loaded = asyncio.Event()

    def apply(self, task_type: str, value: bytes | None) -> None:
        """One entry of the bucket (None: deleted): the type's schema, or the seed's order."""
        if task_type not in self._types:
            return  # a type this ingest does not take (its orders answer 400 whatever it declares)
        if value is None:
            changed = self.schemas.pop(task_type, None) is not None
        else:
            try:
                record = decode_record(value)
                schema = None if record.json_schema is None else PayloadSchema(task_type, record.json_schema)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                # Workers check their schema before they publish it: this one was written by hand.
                log.error("payload of %s in KV %s unusable (%s); keeping the one before", task_type,
                          contract.TYPES_BUCKET, exc)  # fmt: skip
                return
            previous = self.schemas.get(task_type)
            if schema is None:
                changed = self.schemas.pop(task_type, None) is not None
            else:
                changed = previous is None or previous.schema != schema.schema
                if changed:
                    self.schemas[task_type] = schema
            if changed and self.loaded.is_set():
                log.info("task type %s: payload %s (declared by %s)", task_type,
                         "declared" if schema else "the seed's order", record.worker_id)  # fmt: skip
        if changed:
            self.version += 1

    async def watch(self, js: JetStreamContext) -> None:
        """Until cancelled: follow the bucket (re-watching after an error)."""
        await buckets.follow_bucket(js, contract.TYPES_BUCKET, self._seen, log, "payloads")

    def _seen(self, entry: KeyValue.Entry | None) -> None:
        if entry is None:  # every declaration there is, is in
            if not self.loaded.is_set():
                log.info("payloads: declared for %s", ", ".join(sorted(self.schemas)) or "no type")
            self.loaded.set()
        else:
            deleted = entry.operation in ("DEL", "PURGE")
            self.apply(entry.key, None if deleted else entry.value)
