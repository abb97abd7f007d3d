"""Declared payloads in the ingest, in process through its backend seam: the real IngestState,
PayloadCatalogue, OrdersEndpoint and Starlette routes, with a stand-in in place of the publish
(it records what would be stored; NATS is the end-to-end test's, tests/worker/test_payloads.py).
The catalogue is fed the records the workers write to KV ORDER_TYPES, as its watch would."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from typing import Annotated, Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from ingest.app import create_app
from ingest.openapi import document
from ingest.state import IngestState
from orderflow import contract
from orderflow.envsettings import load_settings
from orderflow.metrics import IngestMetrics
from orderflow.payloads import PayloadSchema, TypeRecord, encode_record


class Line(msgspec.Struct):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    qty: Annotated[int, msgspec.Meta(ge=1, le=1000)]


class Invoice(msgspec.Struct, forbid_unknown_fields=True):
    customer: str
    lines: list[Line]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "EUR"


THUMBNAIL: dict[str, Any] = {
    "type": "object",
    "required": ["url"],
    "properties": {"url": {"type": "string"}, "width": {"type": "integer", "minimum": 16}},
}
SEED = {"product_id": "33", "count": "3", "username": "maksim.konovalov"}
INVOICE = {"customer": "acme", "lines": [{"sku": "a-1", "qty": 2}]}


def record(task_type: str, schema: dict[str, Any] | None) -> bytes:
    return encode_record(TypeRecord(task_type, schema, "w-1", time.time()))


class Rig:
    """An ingest of types default, invoice, thumbnail; what it would store is in `stored`."""

    def __init__(self) -> None:
        env = {"ORDERFLOW_TASK_TYPES": "default,invoice,thumbnail", "ORDERFLOW_HTTP_HOST": "127.0.0.1"}
        settings = load_settings("ingest", env)  # loopback: an ingest without API keys
        self.state = IngestState(settings, IngestMetrics(CollectorRegistry()))
        self.stored: list[tuple[str, contract.Order | contract.TypedOrder]] = []
        self.app = create_app(self.state)
        self.app.orders.accept = self.accept  # the stand-in publish

    async def accept(
        self, order: contract.Order | contract.TypedOrder, task_type: str, keyed: bool, client: str | None
    ) -> tuple[int, bytes]:
        self.stored.append((task_type, order))
        return 200, b'{"result":"created","order_id":"' + order.order_id.encode() + b'"}'

    def declare(self, task_type: str, schema: dict[str, Any] | None) -> None:
        self.state.catalogue.apply(task_type, record(task_type, schema))

    def request(self, method: str, path: str, data: bytes | None = None) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
                return await client.request(method, path, content=data)

        return asyncio.run(send())

    def post(self, body: Any, query: str = "", raw: bytes | None = None) -> tuple[int, Any]:
        response = self.request(
            "POST", "/orders" + query, raw if raw is not None else json.dumps(body).encode()
        )
        return response.status_code, response.json()


@pytest.fixture
def rig() -> Rig:
    rig = Rig()
    rig.declare("invoice", msgspec.json.schema(Invoice))
    rig.declare("thumbnail", THUMBNAIL)
    return rig


def test_an_order_of_a_declared_type_is_checked_against_its_schema_and_stored_with_its_payload(
    rig: Rig,
) -> None:
    status, body = rig.post({"lines": [{"qty": 2, "sku": "a-1"}], "customer": "acme"}, "?type=invoice")
    assert status == 200 and body["result"] == "created"
    [(task_type, order)] = rig.stored
    assert task_type == "invoice" and isinstance(order, contract.TypedOrder)
    # stored as sent, keys sorted: two equal bodies are the same bytes (Idempotency-Key compares them)
    assert bytes(order.payload) == b'{"customer":"acme","lines":[{"qty":2,"sku":"a-1"}]}'
    assert msgspec.json.decode(bytes(order.payload), type=Invoice) == Invoice("acme", [Line("a-1", 2)])


def test_a_bad_order_of_a_declared_type_answers_400_naming_each_bad_field(rig: Rig) -> None:
    bad = {"customer": 7, "lines": [{"sku": "", "qty": 1.5}, {"qty": 0}], "currency": "eur", "vat": 1}
    status, body = rig.post(bad, "?type=invoice")
    assert status == 400 and body["result"] == "invalid"
    assert body["errors"] == [
        {"field": "currency", "message": "must match the pattern ^[A-Z]{3}$"},
        {"field": "customer", "message": "must be of type string"},
        # an integer is a number without a fraction part, as the worker's Struct decodes it
        {"field": "lines.0.qty", "message": "must be of type integer"},
        {"field": "lines.0.sku", "message": "must be at least 1 characters"},
        {"field": "lines.1.qty", "message": "must be >= 1"},
        {"field": "lines.1.sku", "message": "is required"},
        # the Struct forbids unknown fields: the ingest refuses them rather than drop them
        {"field": "vat", "message": "is not an allowed field"},
    ]
    assert rig.stored == []


def test_a_json_schema_type_keeps_extra_fields_unless_its_schema_forbids_them(rig: Rig) -> None:
    status, _ = rig.post({"url": "https://x/a.png", "width": 64, "alt": "a cat"}, "?type=thumbnail")
    assert status == 200
    assert msgspec.json.decode(bytes(rig.stored[0][1].payload)) == {  # type: ignore[union-attr]
        "url": "https://x/a.png", "width": 64, "alt": "a cat",
    }  # fmt: skip
    assert rig.post({"width": 8}, "?type=thumbnail") == (
        400,
        {
            "result": "invalid",
            "errors": [
                {"field": "url", "message": "is required"},
                {"field": "width", "message": "must be >= 16"},
            ],
        },
    )


@pytest.mark.parametrize(
    "raw",
    [b"[1]", b"not json", b"[" * 3000 + b"]" * 3000, b'"a string"'],
    ids=["array", "text", "deep", "str"],
)
def test_a_body_that_is_no_json_object_answers_400_for_a_declared_type_too(rig: Rig, raw: bytes) -> None:
    assert rig.post(None, "?type=invoice", raw=raw) == (
        400,
        {"result": "invalid", "errors": [{"field": "body", "message": "must be a JSON object"}]},
    )


def test_the_default_type_keeps_the_seed_order_and_drops_unknown_fields(rig: Rig) -> None:
    assert (rig.post({**SEED, "extra": "dropped"}))[0] == 200
    [(task_type, order)] = rig.stored
    assert task_type == "default" and order == contract.Order(order.order_id, 33, 3, "maksim.konovalov",
                                                              order.created_at)  # fmt: skip
    # an invoice body is no seed order
    status, body = rig.post(INVOICE)
    assert status == 400 and {e["field"] for e in body["errors"]} == {"product_id", "count", "username"}


def test_an_unknown_type_answers_400_listing_the_known_ones(rig: Rig) -> None:
    assert rig.post(INVOICE, "?type=invoices") == (
        400,
        {
            "result": "invalid",
            "errors": [
                {"field": "type", "message": "unknown task type; one of: default, invoice, thumbnail"}
            ],
        },
    )


def test_a_type_declared_back_to_the_seed_order_is_checked_as_one_again(rig: Rig) -> None:
    assert (rig.post(SEED, "?type=invoice"))[0] == 400
    rig.declare("invoice", None)  # a worker whose handler declares no payload started
    assert (rig.post(SEED, "?type=invoice"))[0] == 200
    assert isinstance(rig.stored[0][1], contract.Order)


def test_the_catalogue_ignores_unconfigured_types_and_keeps_a_schema_over_a_broken_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig()
    catalogue = rig.state.catalogue
    catalogue.apply("report", record("report", THUMBNAIL))  # not a type of this ingest
    assert catalogue.schemas == {} and catalogue.version == 0
    catalogue.apply("thumbnail", record("thumbnail", THUMBNAIL))
    catalogue.apply("thumbnail", b"{not json")  # written by hand
    catalogue.apply("thumbnail", record("thumbnail", {"type": 12}))
    assert catalogue.schemas["thumbnail"].schema == THUMBNAIL and catalogue.version == 1
    assert "unusable" in caplog.text
    catalogue.apply("thumbnail", None)  # the key deleted
    assert catalogue.schemas == {} and catalogue.version == 2


def test_openapi_shows_each_type_payload_and_follows_a_new_declaration(rig: Rig) -> None:
    doc = rig.request("GET", "/openapi.json").json()
    post = doc["paths"]["/orders"]["post"]
    schemas = doc["components"]["schemas"]
    assert post["x-orderflow-payloads"] == {
        "default": {"$ref": "#/components/schemas/Order"},
        "invoice": {"$ref": "#/components/schemas/payload.invoice"},
        "thumbnail": {"$ref": "#/components/schemas/payload.thumbnail"},
    }
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "product_id", "count", "username",
    ]  # fmt: skip
    assert schemas["payload.thumbnail"] == THUMBNAIL
    # msgspec's $defs are components, its references rewritten to them
    assert schemas["payload.invoice"] == {"$ref": "#/components/schemas/payload.invoice.Invoice"}
    lines = schemas["payload.invoice.Invoice"]["properties"]["lines"]
    assert lines["items"] == {"$ref": "#/components/schemas/payload.invoice.Line"}
    assert "payload.invoice.Line" in schemas
    [type_param] = [p for p in post["parameters"] if p["name"] == "type"]
    assert type_param["schema"]["enum"] == ["default", "invoice", "thumbnail"]

    rig.declare("thumbnail", {**THUMBNAIL, "required": ["url", "width"]})
    doc = rig.request("GET", "/openapi.json").json()
    assert doc["components"]["schemas"]["payload.thumbnail"]["required"] == ["url", "width"]


def test_a_declared_default_type_is_the_request_body() -> None:
    doc = document(["invoice"], {"invoice": THUMBNAIL})
    assert doc["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/payload.invoice"
    }


def test_a_schema_over_the_size_bound_is_refused() -> None:
    big = {"type": "object", "description": "x" * 70_000}
    with pytest.raises(ValueError, match="over 65536"):
        PayloadSchema("big", big)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)


@functools.cache
def invoice_schema() -> PayloadSchema:
    """Checked and compiled once, as the ingest does at start-up (per example, it was most of the run)."""
    return PayloadSchema("invoice", msgspec.json.schema(Invoice))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.dictionaries(
        st.sampled_from(["customer", "lines", "currency", "x"]) | st.text(max_size=8), json_values, max_size=5
    )
)
def test_any_json_object_is_an_invoice_or_named_field_errors_never_an_exception(body: dict[str, Any]) -> None:
    """hypothesis on the declared schema's check: arbitrary JSON objects give an order whose stored
    payload the worker's Struct decodes, or field errors with a field and a message; nothing raises."""
    result = invoice_schema().validate(json.dumps(body).encode(), "o-1")
    if isinstance(result, contract.TypedOrder):
        msgspec.json.decode(bytes(result.payload), type=Invoice)  # what the ingest takes, the worker reads
    else:
        assert result and all(e.field and e.message for e in result)
