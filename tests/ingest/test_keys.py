"""The Idempotency-Key rules (ingest/keys.py), in process."""

from __future__ import annotations

from typing import Any

import pytest
from memory_backend import InProcessIngest

from ingest.keys import KeyRecord, Outcome, fingerprint, judge
from ingest.publisher import Published
from orderflow import contract

NOW = 1_000_000.0


def order(count: int, username: str = "m") -> contract.Order:
    return contract.Order("k", 1, count, username, NOW)


def test_the_fingerprint_is_of_the_validated_order_and_its_task_type() -> None:
    assert fingerprint(order(3), "default") == fingerprint(contract.Order("k", 1, 3, "m", NOW + 5), "default")
    assert fingerprint(order(3), "default") != fingerprint(order(4), "default")
    assert fingerprint(order(3), "default") != fingerprint(order(3), "invoice")
    assert fingerprint(order(3, "a\0b"), "t") != fingerprint(order(3, "a"), "\0bt")


def test_the_fingerprint_is_the_api_keys_own() -> None:
    """Another API key's request with the same Idempotency-Key and body is another request (422),
    not a replay answered with the first client's order id; without auth nothing changes."""
    assert fingerprint(order(3), "default", "shop") != fingerprint(order(3), "default", "other")
    assert fingerprint(order(3), "default", "shop") == fingerprint(order(3), "default", "shop")
    assert fingerprint(order(3), "default", "shop") != fingerprint(order(3), "default")
    assert fingerprint(order(3), "default", None) == fingerprint(order(3), "default")


def test_what_an_existing_record_means() -> None:
    fp = fingerprint(order(3), "default")
    fresh = KeyRecord(fp, "k", NOW - 1, "c")
    old = KeyRecord(fp, "k", NOW - 10, "c")
    failed = KeyRecord(fp, "k", NOW - 1, "c", failed=True)
    assert judge(fresh, "other", order_exists=True, now=NOW, in_flight_s=3) is Outcome.MISMATCH
    assert judge(fresh, fp, order_exists=True, now=NOW, in_flight_s=3) is Outcome.REPLAY
    assert judge(old, fp, order_exists=True, now=NOW, in_flight_s=3) is Outcome.REPLAY
    assert judge(fresh, fp, order_exists=False, now=NOW, in_flight_s=3) is Outcome.IN_FLIGHT
    assert judge(old, fp, order_exists=False, now=NOW, in_flight_s=3) is Outcome.RETRY
    assert judge(failed, fp, order_exists=False, now=NOW, in_flight_s=3) is Outcome.RETRY


def test_an_idempotent_retry_adds_nothing_and_returns_the_same_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the routes (the in-memory store judges with the same `judge`): a repeat of the
    key with the same body ("3" and 3 are one body once validated) is answered 200 with the same
    id from the key record, and publishes nothing at all (it used to publish again and rely on
    JetStream's duplicate window, which lasts two minutes, not 7 days)."""
    ingest = InProcessIngest()
    published: list[str] = []
    store_publish = ingest.store.publish

    async def publish(order: contract.Order | contract.TypedOrder, *args: Any, **kwargs: Any) -> Published:
        published.append(order.order_id)
        return await store_publish(order, *args, **kwargs)

    monkeypatch.setattr(ingest.store, "publish", publish)
    body = {"product_id": "33", "count": "3", "username": "maksim.konovalov"}
    first = ingest.post(body, {"Idempotency-Key": "order-42"})
    again = ingest.post({**body, "count": 3}, {"Idempotency-Key": "order-42"})
    assert first[0] == again[0] == 200
    assert first[2]["order_id"] == again[2]["order_id"] == "key-order-42"
    assert list(ingest.store.orders) == ["key-order-42"]
    assert published == ["key-order-42"]  # once: the repeat was answered without a publish
    assert ingest.metric("orderflow_idempotent_requests_total", {"outcome": "replay"}) == 1
