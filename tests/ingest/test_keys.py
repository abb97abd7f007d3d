"""The Idempotency-Key rules (ingest/keys.py), in process."""

from __future__ import annotations

from ingest.keys import KeyRecord, Outcome, fingerprint, judge
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
