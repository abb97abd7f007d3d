"""Idempotency-Key per the IETF httpapi draft (issue #13 item 6), against a real ingest and
nats-server: 422 for another body, 409 while the first is in flight, 200 with the same id and
nothing stored for a repeat, for as long as the order's status is kept (7 days), not only JetStream's
2 minutes; a key names the order `key-<key>`, never a generated id."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
from harness import (
    NatsServer,
    Service,
    connect,
    count_events,
    events_per_order,
    http,
    kv_put,
    kv_value,
    run,
    run_records,
    status_of,
    stored_messages,
    wait_until,
)

from ingest.keys import KeyRecord, fingerprint
from orderflow import buckets, contract, validation

pytestmark = pytest.mark.procs

ORDER = {"product_id": "33", "count": "3", "username": "maksim.konovalov"}


def post(svc: Service, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Idempotency-Key": key} if key else {}
    status, hdrs, payload = http("POST", svc.url + "/orders", json.dumps(body).encode(), headers)
    return status, hdrs, json.loads(payload)


async def key_record(url: str, key: str) -> KeyRecord | None:
    value = await kv_value(url, buckets.KEYS_BUCKET, key)
    return msgspec.json.decode(value, type=KeyRecord) if value else None


async def put_key_record(url: str, key: str, record: KeyRecord) -> None:
    await kv_put(url, buckets.KEYS_BUCKET, key, msgspec.json.encode(record))


def the_order(key: str) -> contract.Order:
    order = validation.validate_order(json.dumps(ORDER).encode(), key)
    assert isinstance(order, contract.Order)
    return order


@pytest.fixture
def ingest(spawn: Callable[..., Service]) -> Service:
    svc: Service = spawn("ingest")
    return svc.wait_ready()


def test_the_same_key_with_another_body_is_422_and_stores_nothing(
    ingest: Service, nats_server: NatsServer
) -> None:
    assert post(ingest, ORDER, "k-1")[0] == 200
    before = run(key_record(nats_server.url, "k-1"))
    status, _, body = post(ingest, {**ORDER, "count": "4"}, "k-1")
    assert status == 422 and body["result"] == "idempotency-key-reused" and body["order_id"] == "key-k-1"
    assert post(ingest, ORDER, "k-1")[0] == 200  # the original body is still the key's
    status, _, _ = http(
        "POST", ingest.url + "/orders?type=default", json.dumps(ORDER).encode(), {"Idempotency-Key": "k-1"}
    )
    assert status == 200  # the default type, named: the same request
    assert len(run(stored_messages(nats_server.url))) == 1
    assert run(key_record(nats_server.url, "k-1")) == before
    assert ingest.metric('orderflow_idempotent_requests_total{outcome="mismatch"}') == 1


def test_keyed_orders_carry_the_status_check_header_and_others_do_not(
    ingest: Service, nats_server: NatsServer
) -> None:
    assert post(ingest, ORDER, "k-2")[0] == 200
    assert post(ingest, ORDER, None)[0] == 200
    by_id = {json.loads(m.data)["order_id"]: m for m in run(stored_messages(nats_server.url))}
    keyed = by_id.pop("key-k-2")
    assert (keyed.headers or {}).get(contract.H_STATUS_CHECK) == "1"
    assert (keyed.headers or {}).get(contract.H_MSG_ID) == "key-k-2"
    (plain,) = by_id.values()
    assert contract.H_STATUS_CHECK not in (plain.headers or {})
    record = run(key_record(nats_server.url, "k-2"))
    assert record is not None and record.order_id == "key-k-2" and abs(record.at - time.time()) < 60
    assert record.fingerprint == fingerprint(the_order("k-2"), "default")


def test_a_key_whose_first_request_is_in_flight_is_409_and_after_it_failed_it_is_taken_over(
    ingest: Service, nats_server: NatsServer
) -> None:
    """1. A key record of the same body, just written, and no order yet: another request is
       publishing it now (as an ingest elsewhere would be): 409 with Retry-After, nothing stored;
    2. the same record, older than the publish budget (its request failed): this request takes the
       key over, publishes, 200, the order stored once;
    3. a repeat now is a replay: 200, nothing new."""
    order = the_order("k-3")
    fp = fingerprint(order, "default")
    run(put_key_record(nats_server.url, "k-3", KeyRecord(fp, "key-k-3", time.time(), "elsewhere")))
    status, headers, body = post(ingest, ORDER, "k-3")
    assert status == 409 and body["result"] == "in-flight" and headers.get("retry-after") == "1"
    assert run(stored_messages(nats_server.url)) == []
    run(put_key_record(nats_server.url, "k-3", KeyRecord(fp, "key-k-3", time.time() - 60, "elsewhere")))
    assert post(ingest, ORDER, "k-3")[:1] == (200,)
    assert post(ingest, ORDER, "k-3")[0] == 200
    assert [json.loads(m.data)["order_id"] for m in run(stored_messages(nats_server.url))] == ["key-k-3"]
    assert ingest.metric('orderflow_idempotent_requests_total{outcome="in_flight"}') == 1
    assert ingest.metric('orderflow_idempotent_requests_total{outcome="retry"}') == 1
    assert ingest.metric('orderflow_idempotent_requests_total{outcome="replay"}') == 1


def test_a_failed_publish_frees_its_key_for_the_retry_at_once(
    spawn: Callable[..., Service], nats_server: NatsServer
) -> None:
    """A stream that refuses (full) answers 503; the record is marked failed, so the client's retry
    is not told 409 for the rest of the publish budget."""
    svc = spawn("ingest", STREAM_MAX_MSGS=1).wait_ready()
    assert post(svc, ORDER, None)[0] == 200  # the stream is full now
    assert post(svc, ORDER, "k-4")[0] == 503
    record = run(key_record(nats_server.url, "k-4"))
    assert record is not None and record.failed
    assert post(svc, ORDER, "k-4")[0] == 503  # retried (not 409), refused again by the full stream
    assert svc.metric('orderflow_idempotent_requests_total{outcome="retry"}') == 1


def test_concurrent_requests_with_one_key_store_one_order(ingest: Service, nats_server: NatsServer) -> None:
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(lambda _: post(ingest, ORDER, "k-5")[0], range(16)))
    assert statuses[200] >= 1 and set(statuses) <= {200, 409}, statuses
    assert [json.loads(m.data)["order_id"] for m in run(stored_messages(nats_server.url))] == ["key-k-5"]


def test_a_repeat_is_answered_from_the_status_record_after_the_order_left_the_stream(
    ingest: Service, nats_server: NatsServer
) -> None:
    """After a worker processed the order (its `done` record stored, the message acked away), a
    repeat still answers 200 with the same id and publishes nothing."""
    assert post(ingest, ORDER, "k-6")[0] == 200

    async def process() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            kv = await js.key_value(contract.STATUS_BUCKET)
            await kv.put("key-k-6", contract.encode(contract.StatusRecord("key-k-6", "done", 0, time.time())))
            (msg,) = await stored_messages(nats_server.url)
            await js.delete_msg(contract.STREAM, msg.seq)

    run(process())
    published = ingest.metric("orderflow_orders_published_total")
    assert post(ingest, ORDER, "k-6")[:1] == (200,)
    assert ingest.metric("orderflow_orders_published_total") == published
    assert run(stored_messages(nats_server.url)) == []


# --- issue #20: a key never names another order, and is remembered as long as its order's status ---
async def drop_key_record(url: str, key: str) -> None:
    """The record gone as max_age removes it (no delete marker left behind)."""
    async with connect(url) as nc:
        await nc.jetstream().purge_stream(
            "KV_" + buckets.KEYS_BUCKET, subject=buckets.KEYS_SUBJECT_PREFIX + key
        )


def wait_done(url: str, order_id: str) -> None:
    wait_until(
        lambda: (s := status_of(url, order_id)) is not None and s.status == "done", 20, f"{order_id} done"
    )


def test_a_key_equal_to_a_generated_id_names_a_new_order_that_runs(
    spawn: Callable[..., Service], nats_server: NatsServer
) -> None:
    """It used to become that order's id: 200 `created`, then the worker acked it as already done
    and it never ran. Keyed ids live in their own namespace (`key-<key>`)."""
    ingest = spawn("ingest").wait_ready()
    spawn("worker", WORK_S="0.05").wait_ready()
    status, _, body = post(ingest, ORDER, None)
    assert status == 200
    generated = body["order_id"]
    wait_done(nats_server.url, generated)
    status, _, body = post(ingest, {**ORDER, "count": "4"}, generated)
    assert status == 200 and body["order_id"] != generated
    assert body["order_id"] == contract.keyed_order_id(generated)
    wait_done(nats_server.url, body["order_id"])
    runs = run(run_records(nats_server.url))
    assert count_events(runs, "done") == {generated: 1, body["order_id"]: 1}


def test_a_key_lives_exactly_as_long_as_an_order_status(
    spawn: Callable[..., Service], nats_server: NatsServer
) -> None:
    """One lifetime, derived in one place: the key's record had 24 h, the order's status 7 days."""
    spawn("ingest", STATUS_TTL_S="3600").wait_ready()

    async def max_ages() -> tuple[float, float]:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            keys = await js.stream_info("KV_" + buckets.KEYS_BUCKET)
            status = await js.stream_info("KV_" + contract.STATUS_BUCKET)
            return keys.config.max_age or 0, status.config.max_age or 0

    assert run(max_ages()) == (3600, 3600)


def test_a_key_whose_record_expired_while_its_order_status_lives_answers_422(
    spawn: Callable[..., Service], nats_server: NatsServer
) -> None:
    """The key record is written at the request, the status at the end of the work, so the status
    outlives the record by the order's time to done. A reuse in that span with another body used
    to answer 200 `created`, and the worker acked it as already done: never run.
    1. Key K, body A: 200, done.
    2. K's record goes (as max_age removes it); K with body B: 422, nothing published.
    3. The body of A is not known any more either: 422 for it too, until the record expires."""
    ingest = spawn("ingest").wait_ready()
    spawn("worker", WORK_S="0.05").wait_ready()
    status, _, body = post(ingest, ORDER, "expiring")
    assert status == 200
    wait_done(nats_server.url, body["order_id"])
    run(drop_key_record(nats_server.url, "expiring"))
    published = ingest.metric("orderflow_orders_published_total")
    status, _, body = post(ingest, {**ORDER, "count": "4"}, "expiring")
    assert status == 422 and body["result"] == "idempotency-key-reused", body
    assert post(ingest, ORDER, "expiring")[0] == 422
    assert ingest.metric("orderflow_orders_published_total") == published
    assert events_per_order(nats_server.url, "done") == {contract.keyed_order_id("expiring"): 1}
