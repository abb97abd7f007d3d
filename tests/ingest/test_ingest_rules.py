"""The ingest's rules in process (tests/ingest/memory_backend.py: the real app on a stand-in for
NATS): the contract table, the size bound, auth's 401/403, the 405s and the OpenAPI document. That
a 200 means stored in JetStream, failover and signals are tests/ingest/test_ingest.py's."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from memory_backend import InProcessIngest

from orderflow import auth

ORDER = {"product_id": "33", "count": "3", "username": "maksim.konovalov"}

INVALID_BODIES: list[tuple[Any, str]] = [
    ({"product_id": 101, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": -1, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": 1, "count": "3.5", "username": "m"}, "count"),
    ({"product_id": "", "count": 1, "username": "m"}, "product_id"),
    ({"product_id": None, "count": 1, "username": "m"}, "product_id"),
    ({"product_id": True, "count": 1, "username": "m"}, "product_id"),
    ({"count": 1, "username": "m"}, "product_id"),
    ({"product_id": 1, "count": 1, "username": ""}, "username"),
    ({"product_id": 1, "count": 1, "username": "u" * 65}, "username"),
    ([ORDER], "body"),
]


@pytest.fixture
def ingest() -> InProcessIngest:
    return InProcessIngest()


def test_the_validation_table(ingest: InProcessIngest) -> None:
    for body, field in INVALID_BODIES:
        status, _, payload = ingest.post(body)
        assert status == 400, body
        assert payload["result"] == "invalid"
        assert [e["field"] for e in payload["errors"]] == [field], body
    status, _, payload = ingest.post(None, raw=b"this is not json")
    assert status == 400 and payload["errors"][0]["field"] == "body"
    for edge in (
        {"product_id": 0, "count": "100", "username": "m"},
        {"product_id": "100", "count": 0, "username": "m"},
    ):
        assert ingest.post(edge)[0] == 200
    status, _, payload = ingest.post(ORDER, {"Idempotency-Key": "has space"})
    assert status == 400 and payload["errors"][0]["field"] == "Idempotency-Key"
    status, _, payload = ingest.post(ORDER, query="?type=nope")
    assert status == 400 and payload["errors"][0]["field"] == "type"
    assert len(ingest.store.orders) == 2  # only the two valid edge cases


def test_bodies_over_16_kib_get_413_and_nothing_is_stored(ingest: InProcessIngest) -> None:
    big = {**ORDER, "padding": "x" * (17 * 1024)}
    assert ingest.post(big)[0] == 413

    # A chunked body without Content-Length is cut off as it streams in.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 8192

    response = ingest.request("POST", "/orders", chunks())
    assert response.status_code == 413 and "content-length" not in response.request.headers
    assert ingest.store.orders == {}


def test_openapi_describes_the_order_contract(ingest: InProcessIngest) -> None:
    response = ingest.request("GET", "/openapi.json")
    doc = response.json()
    assert response.status_code == 200 and doc["openapi"].startswith("3.")
    post_op = doc["paths"]["/orders"]["post"]
    assert set(post_op["responses"]) >= {"200", "400", "413", "503"}
    assert post_op["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "product_id",
        "count",
        "username",
    ]


def test_wrong_methods_on_known_paths_answer_405_with_allow(ingest: InProcessIngest) -> None:
    for method, path, allowed in [
        ("GET", "/orders", {"POST"}),
        ("PUT", "/orders/", {"POST"}),
        ("DELETE", "/orders/some-order", {"GET", "HEAD"}),
        ("POST", "/healthz", {"GET", "HEAD"}),
        ("POST", "/readyz", {"GET", "HEAD"}),
        ("POST", "/openapi.json", {"GET", "HEAD"}),
    ]:
        response = ingest.request(method, path, b"{}" if method != "GET" else None)
        assert response.status_code == 405, (method, path)
        assert set(response.headers["allow"].split(", ")) == allowed, (method, path)
    assert ingest.request("GET", "/nowhere").status_code == 404
    labels = {"method": "GET", "route": "/orders", "status": "405"}
    assert ingest.metric("orderflow_http_requests_total", labels) == 1


def test_orders_with_a_trailing_slash_is_orders(ingest: InProcessIngest) -> None:
    response = ingest.request("POST", "/orders/", json.dumps(ORDER).encode())
    assert response.status_code == 200 and response.json()["result"] == "created"
    assert list(ingest.store.orders) == [response.json()["order_id"]]
    labels = {"method": "POST", "route": "/orders", "status": "200"}
    assert ingest.metric("orderflow_http_requests_total", labels) == 1


def test_generated_ids_are_random_not_a_counter(ingest: InProcessIngest) -> None:
    ids = [ingest.post(ORDER)[2]["order_id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 128 bits, hex


def test_no_key_a_wrong_key_and_a_key_without_the_scope(tmp_path: Path) -> None:
    """README, Identity: 401 with `WWW-Authenticate: Bearer` and a JSON body without a key or with
    one not ours (`invalid_token`); 403 naming the scope for a key without it. Nothing is stored."""
    shop, reader = auth.new_key(), auth.new_key()
    path = tmp_path / "api-keys.json"
    entries = [auth.entry("shop", [auth.WRITE, auth.READ], shop), auth.entry("reader", [auth.READ], reader)]
    path.write_text(json.dumps({"keys": entries}))
    ingest = InProcessIngest({"ORDERFLOW_API_KEYS_FILE": str(path)})

    def call(method: str, path: str, key: str | None) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = json.dumps(ORDER).encode() if method == "POST" else None
        response = ingest.request(method, path, body, headers)
        return response.status_code, dict(response.headers), response.json() if response.content else None

    status, hdrs, body = call("POST", "/orders", None)
    assert (status, body["result"]) == (401, "unauthorized")
    assert hdrs["www-authenticate"] == 'Bearer realm="orderflow"'
    assert hdrs["content-type"] == "application/json"
    status, hdrs, body = call("POST", "/orders", auth.new_key())
    assert (status, body["result"]) == (401, "unauthorized")
    assert 'error="invalid_token"' in hdrs["www-authenticate"]
    assert call("GET", "/orders/x", None)[0] == 401
    status, hdrs, body = call("POST", "/orders", reader)
    assert (status, body["scope"]) == (403, auth.WRITE)
    assert 'error="insufficient_scope", scope="orders:write"' in hdrs["www-authenticate"]
    assert ingest.store.orders == {}
    for status_code, count in (("401", 2), ("403", 1)):  # counted like any response
        labels = {"method": "POST", "route": "/orders", "status": status_code}
        assert ingest.metric("orderflow_http_requests_total", labels) == count
    status, _, body = call("POST", "/orders", shop)
    assert status == 200 and ingest.store.orders[body["order_id"]][2] == "shop"
    assert call("GET", "/readyz", None)[0] in (200, 503)  # a probe needs no key: never 401
