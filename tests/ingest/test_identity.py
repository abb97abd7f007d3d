"""Identity at the intake against the real thing: an ingest with a key file, a worker, a
nats-server (README: Identity; docs/ingest.md). One ingest start covers every rule that needs the
process; the rules of the key file itself (validation, reload, constant time) are proven in
process by tests/orderflow/test_auth.py, the client's view by tests/orderflow/test_lookup.py,
the 401s and 403 of POST /orders (no key, a wrong key, a key without the scope: their challenges
and bodies) by tests/ingest/test_ingest_rules.py.

3. A write key's order carries the key's name (Orderflow-Client) in its message and, once the
   worker ran it, in its status record.
4. GET /orders/{id}: the key that created it sees the allow-listed view (no worker, no error
   text, an error class); another key gets the same 404 as an unknown id; admin sees the full record.
   ?wait= and /events answer the same: 401 without a key, 404 for another key's order, the
   client's view to its owner. An Idempotency-Key is the API key's own: another key reusing it
   gets 422.
5. /healthz and /readyz need no key; /metrics is not on the API port but on its own, without a key.
6. The key file replaced the way a Secret mount is (a symlink swap): the new key works and the
   removed one gets 401, without a restart; a broken version keeps the last good keys, logged once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from harness import NatsServer, Service, connect, http, run, wait_until

from orderflow import auth, contract, lookup

pytestmark = pytest.mark.procs

ORDER = {"product_id": "3", "count": "1", "username": "ok"}


def keyfile(path: Path, keys: dict[str, tuple[str, list[str]]]) -> None:
    """Write a key file as a Secret mount looks: path -> ..data/keys.json, swapped atomically."""
    version = path.parent / f"..v{time.monotonic_ns()}"
    version.mkdir()
    (version / "keys.json").write_text(
        json.dumps({"keys": [auth.entry(name, scopes, key) for name, (key, scopes) in keys.items()]})
    )
    link = path.parent / "..data"
    tmp = path.parent / "..data_tmp"
    tmp.symlink_to(version.name)
    os.replace(tmp, link)
    if not path.is_symlink():
        path.symlink_to("..data/keys.json")


def call(
    svc: Service, method: str, path: str, key: str | None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, hdrs, payload = http(method, svc.url + path, json.dumps(body).encode() if body else None, headers)
    return status, hdrs, json.loads(payload) if payload else None


async def order_headers(url: str, order_id: str) -> dict[str, str]:
    async with connect(url) as nc:
        msg = await nc.jetstream().get_last_msg(contract.STREAM, contract.order_subject("default", order_id))
        return dict(msg.headers or {})


def test_keys_scopes_ownership_views_and_reload(tmp_path: Path, spawn: Any, nats_server: NatsServer) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    path = secret / "api-keys.json"
    shop, other, reader, ops = (auth.new_key() for _ in range(4))
    keys = {
        "shop": (shop, [auth.WRITE, auth.READ]),
        "other": (other, [auth.WRITE, auth.READ]),
        "reader": (reader, [auth.READ]),
        "ops": (ops, [auth.ADMIN]),
    }
    keyfile(path, keys)
    ingest = spawn("ingest", API_KEYS_FILE=path, API_KEYS_RELOAD_S="0.2").wait_ready()  # 5. /readyz: no key

    # 3. the order carries its key's name
    status, _, body = call(ingest, "POST", "/orders", shop, ORDER)
    assert status == 200
    done_id = body["order_id"]
    status, _, body = call(ingest, "POST", "/orders", shop, {**ORDER, "username": "fail-9"})
    failed_id = body["order_id"]
    assert run(order_headers(nats_server.url, done_id))[contract.H_CLIENT] == "shop"
    status, _, queued = call(ingest, "GET", f"/orders/{done_id}", shop)
    assert (status, queued["status"]) == (200, "queued")

    spawn("worker", HANDLERS="flaky", MAX_DELIVER="1").wait_ready()
    final = wait_until(
        lambda: all(
            call(ingest, "GET", f"/orders/{i}", ops)[2]["status"] in contract.FINAL_STATUSES
            for i in (done_id, failed_id)
        ),
        30,
        "both orders final",
    )
    assert final
    # 4. the views
    full = call(ingest, "GET", f"/orders/{failed_id}", ops)[2]
    assert full["status"] == "dead" and full["client"] == "shop" and "worker_id" in full
    assert "fails on purpose" in full["error"] and full["error_class"] == "handler_error"
    status, _, view = call(ingest, "GET", f"/orders/{failed_id}", shop)
    assert status == 200
    assert view["status"] == "dead" and view["error_class"] == "handler_error" and view["attempts"] == 1
    assert set(view) <= lookup.CLIENT_FIELDS | {f + "_s" for f in lookup.CLIENT_FIELDS}
    assert not {"worker_id", "error", "client", "lease_until", "checkpoint", "run_s"} & set(view)
    done = call(ingest, "GET", f"/orders/{done_id}", shop)[2]
    assert done["status"] == "done" and "finished_at" in done and "worker_id" not in done
    assert call(ingest, "GET", f"/orders/{done_id}", reader)[0] == 404  # reader is not its owner
    status, _, other_view = call(ingest, "GET", f"/orders/{done_id}", other)
    unknown = call(ingest, "GET", "/orders/no-such-order", other)
    assert (status, other_view) == (404, {"result": "not-found", "order_id": done_id})
    assert unknown[0] == 404 and unknown[2]["result"] == other_view["result"]
    # ?wait and /events: the same identity, the same 404 for another key's order, the same view
    assert call(ingest, "GET", f"/orders/{done_id}?wait=1", None)[0] == 401
    assert call(ingest, "GET", f"/orders/{done_id}?wait=1", other)[2] == other_view
    assert call(ingest, "GET", f"/orders/{done_id}?wait=1", shop)[2] == done
    assert call(ingest, "GET", f"/orders/{done_id}/events", reader)[0] == 404
    assert call(ingest, "GET", f"/orders/{done_id}/events", None)[0] == 401
    status, hdrs, stream = http(
        "GET", f"{ingest.url}/orders/{done_id}/events", None, {"Authorization": f"Bearer {shop}"}
    )
    assert status == 200 and hdrs["content-type"].startswith("text/event-stream")
    assert [json.loads(line[6:]) for line in stream.decode().splitlines() if line.startswith("data: ")] == [
        done
    ]

    # An Idempotency-Key is the API key's own: the same key and body from another client is
    # another request (422, nothing stored), never the first client's order id.
    keyed = {"Authorization": f"Bearer {shop}", "Idempotency-Key": "order-1"}
    first = http("POST", ingest.url + "/orders", json.dumps(ORDER).encode(), keyed)
    again = http("POST", ingest.url + "/orders", json.dumps(ORDER).encode(), keyed)
    assert first[0] == again[0] == 200 and json.loads(first[2]) == json.loads(again[2])
    stolen = {**keyed, "Authorization": f"Bearer {other}"}
    status, _, payload = http("POST", ingest.url + "/orders", json.dumps(ORDER).encode(), stolen)
    assert status == 422 and json.loads(payload)["result"] == "idempotency-key-reused"

    # 5. probes and metrics
    assert http("GET", ingest.url + "/healthz")[0] == 200
    assert http("GET", ingest.url + "/metrics", headers={"Authorization": f"Bearer {ops}"})[0] == 404
    # read from the metrics port without a key (the 401s of ?wait and /events without a key above)
    assert ingest.metric('orderflow_http_requests_total{route="/orders/{order_id}",status="401"}') == 1
    assert ingest.metric('orderflow_http_requests_total{route="/orders/{order_id}/events",status="401"}') == 1

    # 6. reloaded as a Secret mount changes: shop's key rotated, ops kept
    rotated = auth.new_key()
    keyfile(path, {"shop": (rotated, [auth.WRITE, auth.READ]), "ops": (ops, [auth.ADMIN])})
    wait_until(lambda: call(ingest, "POST", "/orders", rotated, ORDER)[0] == 200, 10, "the new key accepted")
    assert call(ingest, "POST", "/orders", shop, ORDER)[0] == 401
    assert call(ingest, "GET", f"/orders/{done_id}", rotated)[0] == 200  # the name owns the order
    (secret / "broken").write_text(
        '{"keys": [{"name": "x", "scopes": ["orders:write"], "sha256": "' + shop + '"}]}'
    )
    os.replace(secret / "broken", path.resolve())
    wait_until(lambda: "API keys not reloaded" in ingest.logs(), 10, "the bad version logged")
    time.sleep(1.0)  # five more checks of the same bad content
    assert ingest.logs().count("API keys not reloaded") == 1
    assert call(ingest, "POST", "/orders", rotated, ORDER)[0] == 200  # the last good keys
    for key in (shop, other, reader, ops, rotated):
        assert key not in ingest.logs()
