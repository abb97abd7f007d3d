"""How the JetStream store is shared (orderflow/capacity.py), in process. The real full store, with
a nats-server, the ingest and workers: tests/worker/test_full_store.py."""

from __future__ import annotations

import time

import pytest

from orderflow import capacity, contract

STATUS = "KV_" + contract.STATUS_BUCKET


def stored_bytes(subject: str, headers: dict[str, str], data: bytes) -> int:
    """A message's size in nats-server's file store (fileStoreMsgSize: 22 + subject + headers +
    payload + 8-byte checksum), which is what max_bytes counts."""
    head = b""
    if headers:
        head = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    return 22 + len(subject) + len(head) + len(data) + 8


@pytest.mark.parametrize("order_id", ["0" * 32, contract.keyed_order_id("k" * contract.MAX_IDEMPOTENCY_KEY)])
def test_the_status_bucket_holds_the_done_of_every_order_a_full_orders_holds(order_id: str) -> None:
    """The smallest order against the largest `done` record (a 63-character pod name, the longest
    task type): ORDER_STATUS' share has room for a `done` per order of a full ORDERS."""
    now = time.time()
    headers = {contract.H_MSG_ID: order_id}
    if order_id.startswith(contract.KEYED_PREFIX):
        headers[contract.H_STATUS_CHECK] = "1"
    order = contract.encode(contract.Order(order_id, 0, 0, "m", now))
    smallest = stored_bytes(contract.order_subject("t", order_id), headers, order)
    done = contract.StatusRecord(
        order_id, "done", 4, now, worker_id="w" * 63, task_type="t" * 32, started_at=now,
        finished_at=now, deliveries=100, handbacks=10, crashes=2, run_s=3600.123456,
    )  # fmt: skip
    largest = stored_bytes(contract.STATUS_SUBJECT_PREFIX + order_id, {}, contract.encode(done))
    assert largest <= 1.8 * smallest, (largest, smallest)
    assert capacity.SHARES[STATUS] >= capacity.SHARES[contract.STREAM] * largest / smallest


def test_the_caps_leave_headroom_and_cover_every_stream() -> None:
    assert sum(capacity.SHARES.values()) <= 0.95 + 1e-9
    caps = capacity.derive(100_000_000, "test")
    streams = {contract.STREAM, contract.DLQ_STREAM, contract.RUNS_STREAM, contract.RETRIES_STREAM}
    buckets = {contract.STATUS_BUCKET, contract.KEYS_BUCKET, contract.CANCELS_BUCKET, contract.WORKERS_BUCKET}
    assert set(caps.by_stream) == streams | {"KV_" + b for b in buckets}  # an uncapped one eats the rest
    assert sum(caps.by_stream.values()) <= 95_000_000
    assert caps.of(contract.STREAM) == 22_000_000 and caps.of(STATUS) == 45_000_000


def test_the_store_is_the_accounts_limit_per_replica_else_the_setting_else_unknown() -> None:
    assert capacity.store_bytes(3_000, 500, replicas=3) == (1_000, "the account's JetStream storage limit")
    assert capacity.store_bytes(-1, 500, replicas=3) == (500, "ORDERFLOW_STORE_MAX_BYTES")
    assert capacity.store_bytes(-1, -1, replicas=1)[0] == -1
    unknown = capacity.derive(-1, "unknown")
    assert unknown.of(contract.STREAM) == -1 and unknown.of(STATUS) == -1  # as before: no caps


def test_an_explicit_orders_cap_is_kept_when_smaller() -> None:
    assert capacity.derive(1_000_000, "x", orders_max_bytes=1_000).of(contract.STREAM) == 1_000
    assert capacity.derive(1_000_000, "x", orders_max_bytes=10**9).of(contract.STREAM) == 220_000
    assert capacity.derive(-1, "unknown", orders_max_bytes=1_000).by_stream == {contract.STREAM: 1_000}
