"""The ingest's seam to its store: what the routes need from NATS, as Protocols. IngestState holds
one of each once connected; in production they are ingest/publisher.py's Publisher,
ingest/keys.py's IdempotencyKeys and orderflow/lookup.py's OrderLookup (IngestState.connect), in the
in-process tests tests/ingest/memory_backend.py's stand-in, so the contract table, auth, limits,
error bodies and the OpenAPI document are proven without starting a process.

The KV watch behind ?wait and /events (ingest/watch.py) is no part of it: it is fed records
(StatusWatch.deliver) whatever delivers them."""

from __future__ import annotations

from typing import Any, Protocol

from ingest.keys import Claim
from ingest.publisher import Published, Sent
from orderflow import contract


class OrderSink(Protocol):
    async def publish(
        self,
        order: contract.Order | contract.TypedOrder,
        task_type: str,
        status_check: bool = False,
        client: str | None = None,
        run_at: float | None = None,
    ) -> Published:
        """Store the order (its id is its de-duplication id); STORED/DUPLICATE only once stored.
        `run_at`: a delayed order, stored as a message scheduled for that time."""
        ...

    async def publish_atomic(self, messages: list[tuple[str, bytes, dict[str, str]]]) -> Sent:
        """Store `messages` (subject, payload, headers) all or nothing (POST /orders/batch)."""
        ...


class KeyClaims(Protocol):
    async def claim(
        self, order: contract.Order | contract.TypedOrder, task_type: str, client: str | None = None
    ) -> Claim:
        """Claim the order's Idempotency-Key (ingest/keys.py's table)."""
        ...

    async def failed(self, claim: Claim) -> None:
        """The publish after `claim` failed: a retry need not wait for the in-flight window."""
        ...


class OrderFinder(Protocol):
    async def find(self, order_id: str) -> dict[str, Any] | None:
        """The order's raw record, None if no such order; raises on store trouble."""
        ...
