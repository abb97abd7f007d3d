"""/openapi.json tells the whole truth, in process: every status code the ingest answers is in it
with its body's schema, every body the code writes fits the schema documented for it, and every
field an order view can carry is documented. tests/fuzz/test_schemathesis.py then checks real
answers of a real ingest against the document."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from jsonschema import Draft202012Validator

from ingest import apischemas, responses, waiting
from ingest.openapi import document
from orderflow import contract, lookup
from orderflow.edgeprotocol import _TIMEOUT_BODY, HEAD_REFUSALS

DOC = document(["default", "invoice"], {})
PATHS = DOC["paths"]


def schema_of(path: str, method: str, status: str, media: str = apischemas.JSON) -> dict[str, Any]:
    return dict(PATHS[path][method]["responses"][status]["content"][media]["schema"])


def fits(body: bytes | dict[str, Any], schema: dict[str, Any]) -> None:
    value = json.loads(body) if isinstance(body, bytes) else body
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(value)]
    assert errors == [], (value, errors)


EVERY = {"408", "414", "431", "503"}  # the edge's and the connection cap's, on every path


@pytest.mark.parametrize(
    ("path", "method", "statuses"),
    [
        ("/orders", "post", {"200", "400", "401", "403", "409", "413", "422", "500"} | EVERY),
        ("/orders/{order_id}", "get", {"200", "400", "401", "403", "404"} | EVERY),
        ("/orders/{order_id}/events", "get", {"200", "401", "403", "404"} | EVERY),
        ("/healthz", "get", {"200"} | EVERY),
        ("/readyz", "get", {"200"} | EVERY),
    ],
)
def test_every_status_code_is_documented_with_a_body_schema(
    path: str, method: str, statuses: set[str]
) -> None:
    answers = PATHS[path][method]["responses"]
    assert set(answers) == statuses
    for status, answer in answers.items():
        assert answer["description"] and answer["content"], (path, status)
        if status in ("409", "503") and path.startswith("/orders"):
            assert "Retry-After" in answer["headers"]


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/orders", "200", responses.created("key-x")),
        ("/orders", "400", responses.invalid([responses.BAD_KEY])),
        ("/orders", "400", responses.unknown_type({"default", "invoice"})),
        ("/orders", "401", responses.NO_KEY),
        ("/orders", "401", responses.BAD_KEY_401),
        ("/orders", "403", responses.MISSING_SCOPE["orders:write"]),
        ("/orders", "408", _TIMEOUT_BODY),
        ("/orders", "409", responses.key_in_flight("key-x")),
        ("/orders", "413", responses.TOO_LARGE),
        ("/orders", "414", HEAD_REFUSALS["url_too_long"][1]),
        ("/orders", "422", responses.key_reused("key-x")),
        ("/orders", "431", HEAD_REFUSALS["head_too_large"][1]),
        ("/orders", "500", responses.KAPUT),
        ("/orders", "503", responses.KAPUT),
        ("/orders/{order_id}", "400", responses.invalid([contract.FieldError("wait", "x")])),
        ("/orders/{order_id}", "403", responses.MISSING_SCOPE["orders:read"]),
        ("/orders/{order_id}", "404", responses.not_found("nope")),
        ("/orders/{order_id}", "503", responses.KAPUT),
        ("/orders/{order_id}", "503", responses.TOO_MANY_WAITERS),
        ("/orders/{order_id}/events", "503", responses.TOO_MANY_WAITERS),
        ("/readyz", "200", b'{"status":"ready"}'),
        ("/readyz", "503", b'{"status":"not-ready","reason":"NATS not connected"}'),
    ],
)
def test_each_body_the_ingest_writes_fits_its_documented_schema(path: str, status: str, body: bytes) -> None:
    fits(body, schema_of(path, "post" if path == "/orders" else "get", status))


def _every_field() -> dict[str, Any]:
    """A status record with every field set, as the lookup reads it from KV."""
    record = contract.StatusRecord(
        "o-1", "dead", 2, 10.0, worker_id="w", task_type="default", started_at=8.0,
        first_started_at=5.0, runs=3, result=msgspec.Raw(b'{"n":1}'), finished_at=10.0, error="E",
        deliveries=4, handbacks=1, crashes=1, lease_until=12.0, checkpoint=msgspec.Raw(b"[1]"),
        checkpoint_at=9.0, retry_at=11.0, scheduled=True, run_s=2.5, client="shop",
        error_class="handler_error",
    )  # fmt: skip
    return {**lookup.decode_record(contract.encode(record)), "created_at": 1.0}


def test_every_field_of_the_order_view_is_documented_and_both_views_fit_it() -> None:
    view = apischemas.ORDER_VIEW
    assert schema_of("/orders/{order_id}", "get", "200") == view
    record = _every_field()
    full, client = lookup.render(record), lookup.render(record, full=False)
    assert set(full) <= set(view["properties"]), set(full) - set(view["properties"])
    for shown in (full, client, lookup.render({"order_id": "o-2", "status": "queued"}, full=False)):
        fits(shown, view)
    for example in view["examples"]:
        fits(example, view)
    # a field the record gains later fails here until it is documented (and shown)
    assert [f.name for f in msgspec.structs.fields(contract.StatusRecord) if f.name not in full] == []


def test_query_parameters_name_their_values() -> None:
    post = PATHS["/orders"]["post"]
    [task_type] = [p for p in post["parameters"] if p["name"] == "type"]
    assert task_type["schema"]["enum"] == ["default", "invoice"]
    [wait] = [p for p in PATHS["/orders/{order_id}"]["get"]["parameters"] if p["name"] == "wait"]
    assert (wait["schema"]["minimum"], wait["schema"]["maximum"]) == (0, 60)


def test_an_event_of_the_stream_fits_the_documented_event_and_its_data_the_order_view() -> None:
    """JSON Schema takes contentSchema as an annotation: the data's own check is here."""
    schema = schema_of("/orders/{order_id}/events", "get", "200", "text/event-stream")
    text = waiting.event(3, lookup.render(_every_field(), full=False)).decode()
    assert text.endswith("\n\n")
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
    fits(fields, schema)
    fits(json.loads(fields["data"]), schema["properties"]["data"]["contentSchema"])
