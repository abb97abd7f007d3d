"""The ingest against a real nats-server, as a real uvicorn process (README: How it works, guarantees 4 and 5).
The rules that need no process (the validation table, the size bound, the 405s, the OpenAPI
document, generated ids) are tests/ingest/test_ingest_rules.py's, in process on a stand-in for NATS;
an idempotent repeat answered without a publish is tests/ingest/test_keys.py's, the key records in
NATS tests/ingest/test_idempotency.py's."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from harness import NatsServer, Service, connect, http, kv_put, run, stored_messages, wait_until

from orderflow import contract

pytestmark = pytest.mark.procs

ORDER = {"product_id": "33", "count": "3", "username": "maksim.konovalov"}


def post(
    svc: Service, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None, query: str = ""
) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    status, hdrs, payload = http("POST", f"{svc.url}/orders{query}", data, headers)
    try:
        parsed = json.loads(payload) if payload else {}
    except ValueError:
        parsed = {"raw": payload.decode(errors="replace")}
    return status, hdrs, parsed


async def stream_messages(url: str) -> list[dict[str, Any]]:
    return [json.loads(msg.data or b"{}") for msg in await stored_messages(url)]


async def status_records(url: str) -> dict[str, bytes]:
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(contract.STATUS_BUCKET)
        try:
            keys = await kv.keys()
        except Exception:  # no keys at all
            return {}
        return {k: (await kv.get(k)).value or b"" for k in keys}


async def put_status(url: str, order_id: str, record: dict[str, Any]) -> None:
    await kv_put(url, contract.STATUS_BUCKET, order_id, json.dumps(record).encode())


@pytest.fixture
def ingest(spawn: Any) -> Service:
    svc: Service = spawn("ingest")
    return svc.wait_ready()


def test_a_200_means_the_order_is_in_the_stream(ingest: Service, nats_server: NatsServer) -> None:
    status, _, body = post(ingest, ORDER)
    assert status == 200 and body["result"] == "created"
    stored = run(stream_messages(nats_server.url))
    assert [m["order_id"] for m in stored] == [body["order_id"]]
    assert stored[0]["product_id"] == 33 and stored[0]["count"] == 3  # normalised from strings
    # Queued is read from the stream: the ingest writes no status record (one stored write per
    # order; it used to write a `queued` record beside the publish).
    assert run(status_records(nats_server.url)) == {}
    status, _, got = http("GET", f"{ingest.url}/orders/{body['order_id']}")[0:3]
    shown = json.loads(got)
    assert status == 200 and shown["status"] == "queued" and shown["order_id"] == body["order_id"]
    assert shown["task_type"] == "default" and shown["attempts"] == 0
    assert shown["updated_at"].endswith("Z") and abs(shown["updated_at_s"] - time.time()) < 60


def test_nats_down_means_503_with_retry_after_and_back_means_200(spawn: Any, nats_server: NatsServer) -> None:
    # The first write after the loss rides it out for up to the publish budget before its 503: a
    # budget of 2 s keeps that wait well inside the client's 10 s timeout on a loaded machine (with
    # the default 10 s the two raced); later writes fail at once, the outage being older than it.
    ingest: Service = spawn("ingest", PUBLISH_TIMEOUT_S=2).wait_ready()
    assert post(ingest, ORDER)[0] == 200
    nats_server.stop()
    statuses = []
    for _ in range(5):
        status, headers, body = post(ingest, ORDER)
        statuses.append(status)
        assert status == 503
        assert headers.get("retry-after") == "1"
        assert body == {"result": "server-kaput"}
    assert ingest.get("/readyz")[0] == 503
    nats_server.start()
    wait_until(lambda: post(ingest, ORDER)[0] == 200, 15, "the ingest to store orders again")
    assert ingest.get("/readyz")[0] == 200
    assert ingest.proc is not None and ingest.proc.poll() is None  # never restarted
    # Every 200 is in the stream; no 503 was stored behind the client's back.
    stored = run(stream_messages(nats_server.url))
    assert ingest.metric('orderflow_http_requests_total{method="POST",route="/orders",status="200"}') == len(
        stored
    )


def test_direct_mode_answers_500_above_the_limit_and_none_below(spawn: Any) -> None:
    svc: Service = spawn("ingest", MODE="direct", RATE_LIMIT_RPS=50, WORK_S="0.01")
    svc.wait_ready()
    # Below the limit: 20 RPS for 2 s.
    below = []
    for _ in range(40):
        below.append(post(svc, ORDER)[0])
        time.sleep(0.05)
    assert set(below) == {200}
    time.sleep(1.1)  # let the bucket refill
    # Above it: 300 requests as fast as 16 clients go.
    with ThreadPoolExecutor(16) as pool:
        above = Counter(pool.map(lambda _: post(svc, ORDER)[0], range(300)))
    assert above[500] > 0 and above[200] >= 50
    assert set(above) <= {200, 500}
    assert (
        svc.metric('orderflow_http_requests_total{method="POST",route="/orders",status="500"}') == above[500]
    )


def test_sigterm_turns_readiness_503_finishes_in_flight_requests_and_exits_0(spawn: Any) -> None:
    """1. direct mode with 1.5 s of inline work, so requests are in flight when SIGTERM lands;
    2. SIGTERM: /readyz answers 503 at once while the server still serves (shutdown delay 1 s);
    3. the in-flight requests complete with 200; the process exits 0."""
    svc: Service = spawn("ingest", MODE="direct", WORK_S="1.5", SHUTDOWN_DELAY_S="1")
    svc.wait_ready()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(post(svc, ORDER)[0])) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    svc.signal(signal.SIGTERM)
    time.sleep(0.2)
    assert svc.get("/readyz")[0] == 503
    assert svc.get("/healthz")[0] == 200
    for t in threads:
        t.join(10)
    assert results == [200] * 5
    assert svc.wait(15) == 0
    assert "ingest stopped" in svc.logs()


def test_metrics_count_responses_by_status(ingest: Service) -> None:
    post(ingest, ORDER)
    post(ingest, ORDER)
    post(ingest, {"product_id": 500})
    ingest.get("/orders/unknown-order")
    assert ingest.metric('orderflow_http_requests_total{method="POST",route="/orders",status="200"}') == 2
    assert ingest.metric('orderflow_http_requests_total{method="POST",route="/orders",status="400"}') == 1
    assert (
        ingest.metric('orderflow_http_requests_total{method="GET",route="/orders/{order_id}",status="404"}')
        == 1
    )
    assert ingest.metric('orderflow_orders_published_total{result="stored"}') == 2
    assert ingest.metric("orderflow_publish_duration_seconds_count") == 2


def test_get_order_shows_the_status_record_with_iso_timestamps_and_every_count(
    ingest: Service, nats_server: NatsServer
) -> None:
    """1. A status record as a worker writes it, with fields this ingest does not know by name
       (counts, a lease, a checkpoint): every field is shown, every timestamp as ISO 8601 UTC
       beside its number;
    2. the record wins over the order's message in the stream;
    3. an order nobody knows is a 404."""
    _, _, created = post(ingest, ORDER)
    order_id = created["order_id"]
    record = {
        "order_id": order_id,
        "status": "processing",
        "attempts": 1,
        "deliveries": 2,
        "handbacks": 1,
        "crashes": 0,
        "updated_at": 1767225600.25,
        "started_at": 1767225599.0,
        "lease_until": 1767225622.5,
        "checkpoint": {"step": 3},
        "worker_id": "w-1",
    }
    run(put_status(nats_server.url, order_id, record))
    status, _, got = http("GET", f"{ingest.url}/orders/{order_id}")
    shown = json.loads(got)
    assert status == 200
    assert shown["status"] == "processing" and shown["worker_id"] == "w-1"
    assert (shown["attempts"], shown["deliveries"], shown["handbacks"], shown["crashes"]) == (1, 2, 1, 0)
    assert shown["checkpoint"] == {"step": 3}
    assert shown["updated_at"] == "2026-01-01T00:00:00.250Z" and shown["updated_at_s"] == 1767225600.25
    assert shown["started_at"] == "2025-12-31T23:59:59.000Z" and shown["started_at_s"] == 1767225599.0
    assert shown["lease_until"] == "2026-01-01T00:00:22.500Z"
    assert http("GET", f"{ingest.url}/orders/nobody-knows-this-one")[0] == 404
