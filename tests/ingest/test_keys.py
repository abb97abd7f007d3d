"""The Idempotency-Key rules (ingest/keys.py), in process."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from memory_backend import InProcessIngest

from ingest.keys import IdempotencyKeys, KeyRecord, Outcome, fingerprint, judge
from ingest.publisher import Published, Sent
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


class _Taken:
    """A stand-in for the publisher and the key store's reads (NATS itself is what this replaces:
    it cannot be made to answer a given error code on demand): the create is refused with
    `err_code`, and the record found is the one the refused create carried (its own create, stored,
    whose PubAck was lost in a leader change)."""

    def __init__(self, err_code: int) -> None:
        self.err_code = err_code
        self.record: bytes = b""

    async def send(self, subject: str, payload: bytes, headers: dict[str, str]) -> Sent:
        self.record = payload
        return Sent(Published.REJECTED, ("rejected", "wrong last sequence"), err_code=self.err_code)

    async def direct_get_last(self, stream: str, subject: str) -> Any:
        return SimpleNamespace(data=self.record, headers={"Nats-Sequence": "7"})

    async def exists(self, order_id: str) -> bool:
        return False


@pytest.mark.parametrize("err_code", [10071, 10164], ids=["single-server", "replicated"])
def test_a_wrong_last_sequence_is_a_taken_key_from_a_single_server_or_a_cluster(err_code: int) -> None:
    """A create whose key exists is refused with 10071 by a single server and with 10164 (no
    sequence) by a replicated stream's leader: both mean "read the record", here our own create
    whose PubAck was lost, so the order goes on (NEW). A clean-clone run's rolling restart of a
    3-node cluster answered one keyed request 503 when only 10071 was known; nothing is noted as
    a refusal."""
    taken = _Taken(err_code)
    refusals: list[tuple[str, str]] = []
    keys = IdempotencyKeys(
        cast(Any, taken),
        cast(Any, taken),
        cast(Any, taken),
        cast(Any, SimpleNamespace(note=lambda *r: refusals.append(r))),
        1.0,
    )
    claim = asyncio.run(keys.claim(contract.Order("key-k", 1, 3, "m", NOW), "default"))
    assert (claim.outcome, claim.seq, refusals) == (Outcome.NEW, 7, [])
