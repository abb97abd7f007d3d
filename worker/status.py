"""Order status in KV ORDER_STATUS, and run records in ORDER_RUNS."""

from __future__ import annotations

import time

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from orderflow import contract


class StatusStore:
    def __init__(self, nc: Client, js: JetStreamContext, kv: KeyValue) -> None:
        self._nc = nc
        self._js = js
        self._kv = kv

    async def get(self, order_id: str) -> contract.StatusRecord | None:
        try:
            entry = await self._kv.get(order_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return contract.decode_status(entry.value)

    async def put(self, record: contract.StatusRecord, confirm: bool = False) -> None:
        """Final statuses are confirmed (PubAck); progress updates are fire-and-forget."""
        subject = contract.STATUS_SUBJECT_PREFIX + record.order_id
        data = contract.encode(record)
        if confirm:
            await self._js.publish(subject, data)
        else:
            await self._nc.publish(subject, data)

    async def record_run(self, order_id: str, event: str, worker_id: str, attempt: int) -> None:
        run = contract.RunRecord(order_id, event, worker_id, attempt, time.time())
        await self._js.publish(contract.RUNS_PREFIX + order_id, contract.encode(run))
