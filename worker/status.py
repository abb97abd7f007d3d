"""Order status in KV ORDER_STATUS, and run records in ORDER_RUNS."""

from __future__ import annotations

import time

from nats.aio.client import Client

from orderflow import contract
from orderflow.natsmux import Requester

_KV_STREAM = "KV_" + contract.STATUS_BUCKET


class StatusStore:
    def __init__(self, nc: Client, requests: Requester) -> None:
        self._nc = nc
        self._requests = requests

    async def get(self, order_id: str) -> contract.StatusRecord | None:
        data = await self._requests.direct_get(_KV_STREAM, contract.STATUS_SUBJECT_PREFIX + order_id)
        return contract.decode_status(data) if data else None

    async def put(self, record: contract.StatusRecord, confirm: bool = False) -> None:
        """Final statuses are confirmed (PubAck); progress updates are fire-and-forget."""
        subject = contract.STATUS_SUBJECT_PREFIX + record.order_id
        data = contract.encode(record)
        if confirm:
            await self._requests.js_publish(subject, data)
        else:
            await self._nc.publish(subject, data)

    async def record_run(self, order_id: str, event: str, worker_id: str, attempt: int) -> None:
        run = contract.RunRecord(order_id, event, worker_id, attempt, time.time())
        await self._requests.js_publish(contract.RUNS_PREFIX + order_id, contract.encode(run))
