"""Waiting on an order against a real ingest process and a real nats-server (ingest/watch.py,
ingest/waiting.py): one KV watch answers every waiter, the cap holds, SIGTERM ends them cleanly.
The statuses are written to KV ORDER_STATUS as a worker writes them; the rules are in
tests/ingest/test_watch.py."""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from harness import NatsServer, Service, connect, run, service_env, wait_until
from harness import http as request

from orderflow import contract

pytestmark = pytest.mark.procs

CAP = 3


async def _put(url: str, order_id: str, status: str) -> None:
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(contract.STATUS_BUCKET)
        record = contract.StatusRecord(order_id, status, updated_at=time.time())
        await kv.put(order_id, contract.encode(record))


async def _consumers(url: str) -> int:
    async with connect(url) as nc:
        info = await nc.jetstream().stream_info("KV_" + contract.STATUS_BUCKET)
        return int(info.state.consumer_count)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[NatsServer, Service]]:
    nats = NatsServer(tmp_path / "js", tmp_path / "nats.log")
    nats.start()
    svc = Service("ingest", service_env(nats.url, MAX_WAITERS=str(CAP)), tmp_path / "ingest.log")
    try:
        yield nats, svc.start().wait_ready()
    finally:
        svc.stop()
        nats.stop()


def waiters(svc: Service) -> float:
    return svc.metric("orderflow_waiters")


def get(svc: Service, path: str, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    status, headers, body = request("GET", svc.url + path, timeout=timeout)
    return status, headers, json.loads(body)


def events(svc: Service, order_id: str) -> tuple[int, list[dict[str, Any]]]:
    """Read the order's event stream to its end; the `data` of each event."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
    conn.request("GET", f"/orders/{order_id}/events")
    resp = conn.getresponse()
    assert resp.getheader("content-type", "").startswith("text/event-stream")
    text = resp.read().decode()  # to the end: the server closes at the final status
    conn.close()
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    return resp.status, data


def test_a_wait_is_answered_by_the_watch_when_the_order_ends_and_all_share_one_watch(
    stack: tuple[NatsServer, Service],
) -> None:
    """1. Three clients wait (?wait=30, the cap) on two orders: one consumer on KV_ORDER_STATUS.
    2. A fourth is refused 503 + Retry-After, on ?wait and on /events alike.
    3. `done` written: the two waiters of that order answer at once with it; the other's at its own.
    4. A wait that runs out answers 200 with the order as it is; a bad ?wait is 400 naming it."""
    nats, svc = stack
    for order_id in ("w-1", "w-2"):
        run(_put(nats.url, order_id, "processing"))
    with ThreadPoolExecutor(4) as pool:
        futures: list[Future[tuple[int, dict[str, str], Any]]] = [
            pool.submit(get, svc, f"/orders/{order_id}?wait=30") for order_id in ("w-1", "w-1", "w-2")
        ]
        wait_until(lambda: waiters(svc) == CAP, 10, "three registered waiters")
        assert run(_consumers(nats.url)) == 1

        status, headers, body = get(svc, "/orders/w-1?wait=5")
        assert (status, body["result"], headers["retry-after"]) == (503, "too-many-waiters", "1")
        status, _, body = request("GET", svc.url + "/orders/w-1/events")
        assert status == 503 and b"too-many-waiters" in body

        written = time.monotonic()
        run(_put(nats.url, "w-1", "done"))
        for future in futures[:2]:
            status, _, body = future.result(10)
            assert (status, body["status"]) == (200, "done")
        assert time.monotonic() - written < 2.0
        assert not futures[2].done()
        run(_put(nats.url, "w-2", "cancelled"))
        assert futures[2].result(10)[2]["status"] == "cancelled"

    run(_put(nats.url, "w-3", "processing"))
    started = time.monotonic()
    status, _, body = get(svc, "/orders/w-3?wait=0.5")
    assert (status, body["status"]) == (200, "processing") and 0.4 < time.monotonic() - started < 5
    for bad in ("61", "-1", "soon", "nan"):
        status, _, body = get(svc, f"/orders/w-3?wait={bad}")
        assert status == 400 and body["errors"][0]["field"] == "wait", (bad, body)
    assert get(svc, "/orders/nope?wait=1")[0] == 404
    assert waiters(svc) == 0


def test_events_stream_each_status_change_and_a_sigterm_ends_waiters_cleanly(
    stack: tuple[NatsServer, Service],
) -> None:
    """1. /events sends the current status, then each change (not a lease refresh), and closes
       after the final one.
    2. SIGTERM with a ?wait=30 and a stream open: the wait is answered 200 with what is known,
       the stream ends (no reset), and the ingest exits 0."""
    nats, svc = stack
    run(_put(nats.url, "e-1", "queued"))
    with ThreadPoolExecutor(2) as pool:
        stream = pool.submit(events, svc, "e-1")
        wait_until(lambda: waiters(svc) == 1, 10, "the stream's waiter")
        for status in ("processing", "processing", "queued", "processing", "done"):
            run(_put(nats.url, "e-1", status))
        code, data = stream.result(10)
    assert code == 200
    assert [d["status"] for d in data] == ["queued", "processing", "queued", "processing", "done"]

    run(_put(nats.url, "e-2", "processing"))
    with ThreadPoolExecutor(2) as pool:
        waited = pool.submit(get, svc, "/orders/e-2?wait=30")
        stream = pool.submit(events, svc, "e-2")
        wait_until(lambda: waiters(svc) == 2, 10, "two waiters")
        signalled = time.monotonic()
        svc.signal(signal.SIGTERM)
        answer, _, body = waited.result(10)
        assert (answer, body["status"]) == (200, "processing")
        code, data = stream.result(10)
        assert code == 200 and [d["status"] for d in data] == ["processing"]
        assert time.monotonic() - signalled < 5
    assert svc.wait(15) == 0
