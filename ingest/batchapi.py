"""POST /orders/batch in the OpenAPI document (ingest/openapi.py). Each item's `order` is only an
object here: a bad order is that item's `invalid` in a 200, never the batch's 400 (the document
says what the endpoint does)."""

from __future__ import annotations

from typing import Any

from ingest import apischemas as s
from orderflow import auth

_ITEM_RESULTS = ["created", "invalid", "idempotency-key-reused", "in-flight", "not-stored", "unknown"]
_MODE = {"enum": ["atomic", "pipelined"]}
_ITEM = {
    "type": "object",
    "required": ["result"],
    "properties": {
        "result": {"enum": _ITEM_RESULTS},
        "order_id": {"type": "string"},
        "errors": s.INVALID["properties"]["errors"],
        "message": {"type": "string"},
    },
}
_ANSWER = {
    "type": "object",
    "required": ["mode", "items"],
    "properties": {"mode": _MODE, "items": {"type": "array", "items": _ITEM}},
}
_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["orders"],
    "additionalProperties": False,
    "properties": {
        "orders": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["order"],
                "additionalProperties": False,
                "properties": {
                    "order": {"type": "object", "description": "an order as POST /orders takes it"},
                    "idempotency_key": {
                        "type": "string",
                        "description": "as the Idempotency-Key header of POST /orders; a bad one, or "
                        "one an earlier item used, is this item's `invalid`",
                    },
                },
            },
        }
    },
    "examples": [{"orders": [{"order": {"product_id": "33", "count": 3, "username": "ada"}}]}],
}


def operation(max_orders: int) -> dict[str, Any]:
    write = s.secured(auth.WRITE)
    body = {**_BODY, "properties": {"orders": {**_BODY["properties"]["orders"], "maxItems": max_orders}}}
    return {
        "post": {
            "operationId": "createOrders",
            "security": write["security"],
            "summary": "Accept up to ORDERFLOW_BATCH_MAX_ORDERS orders; one answer once every valid one is stored.",
            "description": "Each item is validated as POST /orders validates one and answered in the "
            "request's order. Without idempotency keys the batch is one JetStream atomic batch "
            "(`mode: atomic`, all or nothing); with keys, or `?mode=pipelined`, its items are stored "
            "side by side (`mode: pipelined`). A 503 names each item `created` or `not-stored` "
            "(`unknown`: an atomic batch whose answer came too late, stored whole or not at all).",
            "parameters": [
                {"name": "type", "in": "query", "required": False, "schema": {"type": "string"}},
                {"name": "mode", "in": "query", "required": False, "schema": _MODE},
            ],
            "requestBody": {"required": True, "content": {s.JSON: {"schema": body}}},
            "responses": {
                "200": s.answer("every valid item stored; each item's result", _ANSWER),
                "400": s.answer("not a batch, too many orders, or a bad parameter: named", s.INVALID),
                "401": write["401"],
                "403": write["403"],
                "413": s.answer(
                    "body over ORDERFLOW_BATCH_MAX_BYTES",
                    {
                        "type": "object",
                        "required": ["result", "limit_bytes"],
                        "properties": {"result": {"const": "too-large"}, "limit_bytes": {"type": "integer"}},
                    },
                ),
                "500": s.answer("direct mode (ORDERFLOW_MODE=direct) over its capacity", s.KAPUT),
                **s.EDGE,
                "503": s.answer(
                    "not every valid item stored (each item says which), or the ingest cannot answer now",
                    {"anyOf": [_ANSWER, s.UNAVAILABLE["content"][s.JSON]["schema"]]},
                    retry_after=True,
                ),
            },
        }
    }
