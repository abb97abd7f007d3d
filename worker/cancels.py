"""Orders cancelled before any worker got them: the markers in KV ORDER_CANCELS, kept in memory by
every worker (a watch delivers the current set at start and every change after), so a first
delivery can be checked without reading its status. `orderflow cancel` writes the marker before it
asks the running workers, so an order that starts in between is still stopped by the ask."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from orderflow import buckets, contract

log = logging.getLogger(__name__)


class CancelMarkers:
    def __init__(self) -> None:
        self._ids: set[str] = set()
        # Set once the watch delivered the current set: until then a first delivery of a cancelled
        # order would not know it is cancelled (and would run), so no fetch starts before it.
        self.loaded = asyncio.Event()

    def __contains__(self, order_id: str) -> bool:
        return order_id in self._ids

    def add(self, order_id: str) -> None:
        self._ids.add(order_id)

    async def watch(self, js: JetStreamContext) -> None:
        """Until cancelled: follow the bucket (re-watching after an error)."""
        await buckets.follow_bucket(js, contract.CANCELS_BUCKET, self._seen, log, "cancel markers")

    def _seen(self, entry: KeyValue.Entry | None) -> None:
        if entry is None:  # the current set is in
            log.info("cancel markers: %d known", len(self._ids))
            self.loaded.set()
        elif entry.operation in ("DEL", "PURGE"):
            self._ids.discard(entry.key)
        else:
            self._ids.add(entry.key)
