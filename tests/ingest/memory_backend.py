"""A named stand-in for NATS behind the ingest's seam (ingest/backend.py), and an in-process ingest
built on it: the real IngestState, Access, OrdersEndpoint, QueuedOrders and Starlette routes,
called through httpx's ASGITransport. It proves the rules (the contract table, auth, limits,
error bodies, the OpenAPI document); what needs NATS or processes (a PubAck, failover, signals,
several processes on one port) stays with the real-process tests beside it.

The stand-in judges Idempotency-Keys with ingest/keys.py's own `fingerprint` and `judge`; its
store is a dict, so the KV's create and compare-and-set are the real-process tests' to prove."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, Mapping
from typing import Any

import httpx
import msgspec
from prometheus_client import CollectorRegistry

from ingest.app import create_app
from ingest.keys import Claim, KeyRecord, Outcome, fingerprint, judge
from ingest.publisher import Published, Sent
from ingest.state import IngestState
from orderflow import contract
from orderflow.envsettings import load_settings
from orderflow.metrics import IngestMetrics

Order = contract.Order | contract.TypedOrder


class MemoryStore:
    """What would be stored: `orders` (id -> task type, order, client), key records, status
    records a test puts (`records`), atomic batches (`batches`), delayed orders' due times (`scheduled`). `up = False` is NATS out of reach."""

    def __init__(self, in_flight_s: float = 6.0) -> None:
        self.up = True
        self.orders: dict[str, tuple[str, Order, str | None]] = {}
        self.key_records: dict[str, KeyRecord] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.batches: list[list[tuple[str, bytes, dict[str, str]]]] = []  # atomic batches stored
        self.scheduled: dict[str, float] = {}  # a delayed order's id -> when it is due
        self._in_flight_s = in_flight_s

    async def publish(
        self,
        order: Order,
        task_type: str,
        status_check: bool = False,
        client: str | None = None,
        run_at: float | None = None,
    ) -> Published:
        if not self.up:
            return Published.UNAVAILABLE
        if order.order_id in self.orders:  # the same Nats-Msg-Id: JetStream stores it once
            return Published.DUPLICATE
        self.orders[order.order_id] = (task_type, order, client)
        if run_at is not None:
            self.scheduled[order.order_id] = run_at
        return Published.STORED

    async def publish_atomic(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> Sent:
        if not self.up:
            return Sent(Published.UNAVAILABLE, ("nats_down", "the stand-in's NATS is down"))
        self.batches.append(messages)
        return Sent(Published.STORED, None)

    async def claim(self, order: Order, task_type: str, client: str | None = None) -> Claim:
        if not self.up:
            return Claim(Outcome.UNAVAILABLE)
        key = order.order_id.removeprefix(contract.KEYED_PREFIX)
        mine = KeyRecord(fingerprint(order, task_type, client), order.order_id, time.time(), "stand-in")
        record = self.key_records.get(key)
        if record is None:
            self.key_records[key] = mine
            return Claim(Outcome.NEW, 1, mine, key)
        exists = await self.find(record.order_id) is not None
        outcome = judge(record, mine.fingerprint, exists, time.time(), self._in_flight_s)
        if outcome is Outcome.RETRY:
            self.key_records[key] = mine
            return Claim(outcome, 1, mine, key)
        return Claim(outcome, 1, record, key)

    async def failed(self, claim: Claim) -> None:
        if claim.record is not None:
            self.key_records[claim.key] = msgspec.structs.replace(claim.record, failed=True)

    async def find(self, order_id: str) -> dict[str, Any] | None:
        if not self.up:
            raise ConnectionError("the stand-in's NATS is down")
        if order_id in self.records:
            return dict(self.records[order_id])
        if order_id not in self.orders:
            return None
        task_type, order, client = self.orders[order_id]
        record: dict[str, Any] = {
            "order_id": order_id,
            "status": "queued",
            "attempts": 0,
            "task_type": task_type,
        }
        if client:
            record["client"] = client
        record["updated_at"] = record["created_at"] = order.created_at
        return record


class InProcessIngest:
    """An ingest configured by `env` (ORDERFLOW_* as the process would read them) on a MemoryStore."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = {"ORDERFLOW_HTTP_HOST": "127.0.0.1", **(env or {})}  # loopback: no API keys needed
        self.settings = load_settings("ingest", env)
        self.registry = CollectorRegistry()
        self.state = IngestState(self.settings, IngestMetrics(self.registry))
        self.store = MemoryStore(self.settings.publish_timeout_s + 1.0)
        self.state.attach(self.store, self.store, self.store, lambda: self.store.up)
        self.app = create_app(self.state)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | AsyncIterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
                return await client.request(method, path, content=body, headers=headers)

        return asyncio.run(send())

    def post(
        self, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None, query: str = ""
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """As tests/ingest/test_ingest.py's `post`: (status, headers, the JSON body)."""
        data = raw if raw is not None else json.dumps(body).encode()
        response = self.request("POST", "/orders" + query, data, headers)
        return response.status_code, dict(response.headers), response.json() if response.content else {}

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0
