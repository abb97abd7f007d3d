"""POST /orders/batch against a real ingest and nats-server (2.12+: atomic batches), through
orderflow.client's submit_batch where a client would call it.

1. Identity first: no key 401, a read-only key 403; past the body bound 413, past the count or
   not a batch 400 naming `orders`.
2. Atomic (no keys): per-item results in the request's order, an invalid item named with its
   fields, every created item stored in ORDERS, and nothing more.
3. Pipelined (keyed items): the key's semantics per item (the id `key-<key>`, a repeat of the
   batch answers the same ids and stores nothing, another body under a used key 422's answer), a
   key used twice in one batch is invalid.
4. A full stream: the atomic batch is refused whole (503, none stored, every item `not-stored`);
   a keyed (pipelined) batch stores what fits and its 503 names which items were stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import NatsServer, Service, http, run, stored_order_ids
from test_identity import keyfile

from orderflow import auth
from orderflow.client import Client, OrderflowError

pytestmark = pytest.mark.procs

ORDER = {"product_id": "3", "count": "1", "username": "ok"}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str, str]:
    secret = tmp_path / "secret"
    secret.mkdir()
    path = secret / "api-keys.json"
    writer, reader = auth.new_key(), auth.new_key()
    keyfile(path, {"shop": (writer, [auth.WRITE, auth.READ]), "reader": (reader, [auth.READ])})
    return path, writer, reader


def post(svc: Service, body: bytes, key: str | None, query: str = "") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    status, _, payload = http("POST", svc.url + "/orders/batch" + query, body, headers)
    return status, json.loads(payload)


def test_identity_bounds_atomic_and_pipelined_batches(
    spawn: Any, nats_server: NatsServer, keys: tuple[Path, str, str]
) -> None:
    path, writer, reader = keys
    ingest = spawn("ingest", API_KEYS_FILE=path, BATCH_MAX_BYTES=4096, BATCH_MAX_ORDERS=20).wait_ready()
    one = json.dumps({"orders": [{"order": ORDER}]}).encode()
    assert post(ingest, one, None)[0] == 401
    assert post(ingest, one, reader)[0] == 403
    status, body = post(ingest, json.dumps({"orders": [{"order": ORDER}] * 100}).encode(), writer)
    assert (status, body) == (413, {"result": "too-large", "limit_bytes": 4096})
    status, body = post(ingest, json.dumps({"orders": [{"order": ORDER}] * 21}).encode(), writer)
    assert (
        status == 400 and body["errors"][0]["field"] == "orders" and "1 to 20" in body["errors"][0]["message"]
    )
    status, body = post(ingest, b'[{"product_id": "3"}]', writer)
    assert status == 400 and body["errors"][0]["field"] == "orders"
    status, body = post(ingest, one, writer, "?mode=fast")
    assert status == 400 and body["errors"][0]["field"] == "mode"
    assert run(stored_order_ids(nats_server.url)) == []
    status, body = post(ingest, one, writer, "?mode=pipelined")  # asked for: no atomic batch
    assert status == 200 and body["mode"] == "pipelined" and body["items"][0]["result"] == "created"
    first = body["items"][0]["order_id"]

    with Client(ingest.url, api_key=writer) as client:
        orders = [ORDER, {**ORDER, "count": "many"}, {**ORDER, "username": "b"}, {**ORDER, "product_id": "9"}]
        result = client.submit_batch(orders)
        assert result["mode"] == "atomic"
        assert [i["result"] for i in result["items"]] == ["created", "invalid", "created", "created"]
        assert [e["field"] for e in result["items"][1]["errors"]] == ["count"]
        created = [first] + [i["order_id"] for i in result["items"] if i["result"] == "created"]
        assert sorted(run(stored_order_ids(nats_server.url))) == sorted(created)

        keyed = client.submit_batch([ORDER, {**ORDER, "count": "2"}, ORDER], idempotency_keys=["a", "b", "a"])
        assert keyed["mode"] == "pipelined"
        assert [i.get("order_id") for i in keyed["items"]] == ["key-a", "key-b", None]
        assert keyed["items"][2]["errors"][0]["field"] == "idempotency_key"
        again = client.submit_batch([ORDER, {**ORDER, "count": "3"}], idempotency_keys=["a", "b"])
        assert again["items"][0] == {"result": "created", "order_id": "key-a"}  # a repeat: the same id
        assert again["items"][1]["result"] == "idempotency-key-reused"  # another body under b
        assert sorted(run(stored_order_ids(nats_server.url))) == sorted([*created, "key-a", "key-b"])


def test_a_full_stream_refuses_an_atomic_batch_whole_and_a_pipelined_one_names_what_it_stored(
    spawn: Any, nats_server: NatsServer
) -> None:
    ingest = spawn("ingest", STREAM_MAX_MSGS=5).wait_ready()
    with Client(ingest.url) as client:
        with pytest.raises(OrderflowError) as refused:
            client.submit_batch([ORDER] * 8)
        assert refused.value.status == 503 and refused.value.body["mode"] == "atomic"
        assert [i["result"] for i in refused.value.body["items"]] == ["not-stored"] * 8
        assert run(stored_order_ids(nats_server.url)) == []

        with pytest.raises(OrderflowError) as partly:
            client.submit_batch([ORDER] * 8, idempotency_keys=[f"k{i}" for i in range(8)])
        body = partly.value.body
        assert partly.value.status == 503 and body["mode"] == "pipelined"
        stored = [i["order_id"] for i in body["items"] if i["result"] == "created"]
        assert len(stored) == 5 and [i["result"] for i in body["items"]].count("not-stored") == 3
        assert sorted(run(stored_order_ids(nats_server.url))) == sorted(stored)
