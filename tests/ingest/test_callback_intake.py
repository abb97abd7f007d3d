"""An order's callback_url at intake, in process (tests/ingest/memory_backend.py: the real app on
a stand-in store): taken out of the body and stored with the order, refused with 400 naming the
field, an API key's default and its secret's name, and the same per item of a batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from memory_backend import InProcessIngest

from orderflow import auth, contract

HOOK = "https://hooks.example.com/orders"
ENV = {"ORDERFLOW_CALLBACK_HOSTS": "hooks.example.com"}
ORDER = {"product_id": 1, "count": 2, "username": "cb"}


def test_a_callback_url_is_stored_with_the_order_and_a_refused_one_names_the_field() -> None:
    ingest = InProcessIngest(ENV)
    status, _, answer = ingest.post({**ORDER, "callback_url": HOOK})
    assert status == 200
    _, order, _ = ingest.store.orders[answer["order_id"]]
    assert isinstance(order, contract.Order)
    assert (order.callback_url, order.callback_secret, order.username) == (HOOK, None, "cb")
    for url, message in [
        ("http://hooks.example.com/x", "must be an https URL"),
        (
            "https://169.254.169.254/latest/meta-data",
            "host 169.254.169.254 is not in the callback allow-list",
        ),
        (["not", "a", "string"], "must be a non-empty string"),
    ]:
        status, _, answer = ingest.post({**ORDER, "callback_url": url})
        assert status == 400 and answer["errors"] == [{"field": "callback_url", "message": message}]
    assert len(ingest.store.orders) == 1
    status, _, answer = InProcessIngest().post({**ORDER, "callback_url": HOOK})  # no allow-list
    assert answer["errors"] == [
        {"field": "callback_url", "message": "callbacks are not enabled on this service"}
    ]


def key_file(tmp_path: Path, **extra: Any) -> tuple[str, str]:
    key = auth.new_key()
    path = tmp_path / "api-keys.json"
    path.write_text(json.dumps({"keys": [{**auth.entry("shop", [auth.WRITE], key), **extra}]}))
    return str(path), key


def test_an_api_keys_default_callback_and_secret_name_go_with_its_orders(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, callback_url=HOOK, webhook_secret="shop-hooks")
    ingest = InProcessIngest({**ENV, "ORDERFLOW_API_KEYS_FILE": path})
    bearer = {"Authorization": f"Bearer {key}"}
    _, _, answer = ingest.post(ORDER, bearer)
    _, order, client = ingest.store.orders[answer["order_id"]]
    assert (order.callback_url, order.callback_secret, client) == (HOOK, "shop-hooks", "shop")
    own = "https://hooks.example.com/mine"
    _, _, answer = ingest.post({**ORDER, "callback_url": own}, bearer)
    _, order, _ = ingest.store.orders[answer["order_id"]]
    assert (order.callback_url, order.callback_secret) == (own, "shop-hooks")


def test_a_default_off_the_allow_list_is_refused_saying_whose_it_is(tmp_path: Path) -> None:
    path, key = key_file(tmp_path, callback_url="https://elsewhere.example.net/h")
    ingest = InProcessIngest({**ENV, "ORDERFLOW_API_KEYS_FILE": path})
    status, _, answer = ingest.post(ORDER, {"Authorization": f"Bearer {key}"})
    assert status == 400
    assert answer["errors"] == [
        {
            "field": "callback_url",
            "message": "the API key's default host elsewhere.example.net is not in the callback allow-list",
        }
    ]


def test_each_item_of_a_batch_carries_its_own_callback_or_names_the_field() -> None:
    ingest = InProcessIngest(ENV)
    batch = {
        "orders": [
            {"order": {**ORDER, "callback_url": HOOK}},
            {"order": {**ORDER, "callback_url": "ftp://hooks.example.com/"}},
            {"order": ORDER, "idempotency_key": "k-1"},
        ]
    }
    response = ingest.request("POST", "/orders/batch", json.dumps(batch).encode())
    assert response.status_code == 200, response.text
    first, second, third = response.json()["items"]
    assert first["result"] == "created" and third["result"] == "created"
    assert second == {
        "result": "invalid",
        "errors": [{"field": "callback_url", "message": "must be an https URL"}],
    }
    assert ingest.store.orders[first["order_id"]][1].callback_url == HOOK
    assert ingest.store.orders[third["order_id"]][1].callback_url is None
