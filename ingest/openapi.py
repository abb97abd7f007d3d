"""The OpenAPI 3.1 document served at /openapi.json, written out so that schemathesis and
client generators see exactly the contract the validator enforces.

Each task type's payload is in it (`document`): the request body is the default type's, every
type's schema is a component, and `x-orderflow-payloads` maps each type to its own (OpenAPI cannot
tie a body to a query parameter's value). A declared schema's `$defs` become components too, its
references rewritten to them."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ingest import apischemas as s
from ingest import batchapi
from orderflow import auth, callbackurl, contract, validation

_quantity: dict[str, Any] = {
    "oneOf": [
        {"type": "integer", "minimum": contract.QUANTITY_MIN, "maximum": contract.QUANTITY_MAX},
        {"type": "string", "pattern": "^[0-9]{1,3}$", "description": "decimal string, 0..100"},
    ]
}
_json = s.JSON
# The seed's order: the payload of every task type that declares none (orderflow/payloads.py).
SEED_ORDER: dict[str, Any] = {
    "type": "object",
    "required": ["product_id", "count", "username"],
    "properties": {
        "product_id": _quantity,
        "count": _quantity,
        "username": {
            "type": "string",
            "minLength": 1,
            "maxLength": contract.MAX_USERNAME,
            "pattern": validation.USERNAME_PATTERN,
        },
        # taken out before a declared payload is checked: any task type's order may carry it
        "callback_url": {
            "type": "string",
            "maxLength": callbackurl.MAX_URL,
            "description": "where to POST the order's final view, signed per Standard Webhooks: "
            "https (http where the service allows it), a host on ORDERFLOW_CALLBACK_HOSTS; "
            "else 400 naming callback_url",
        },
        # taken out like callback_url (ingest/delay.py): any task type's order may carry one
        "delay_s": {
            "type": "number",
            "minimum": 0,
            "description": "run the order this many seconds from now (at most ORDERFLOW_MAX_DELAY_S); "
            "shown as scheduled until then; not with not_before; else 400 naming delay_s",
        },
        "not_before": {
            "type": "string",
            "format": "date-time",
            "description": "run the order at this RFC 3339 time with a zone (at most 5 s in the past, "
            "at most ORDERFLOW_MAX_DELAY_S ahead); else 400 naming not_before",
        },
    },
    "examples": [{"product_id": "33", "count": 3, "username": "maksim.konovalov"}],
}
_write, _read = s.secured(auth.WRITE), s.secured(auth.READ)
_order_id = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "description": "the id POST /orders answered (an id that cannot be one is a 404 too)",
    "schema": {"type": "string"},
    "example": "01JEX9R7Q3V5Z0000000000000",
}
_unknown = s.answer("unknown order, or another API key's (the same answer)", s.NOT_FOUND)
_wait = {
    "name": "wait",
    "in": "query",
    "required": False,
    "description": "seconds (0 to 60) to hold the request until the order is final (done, failed, "
    "dead, cancelled); answered at the final status or when the wait ends, with the order as it is "
    "then (read `status`). Any other value: 400 naming `wait`.",
    "schema": {"type": "number", "minimum": 0, "maximum": 60},
    "example": 30,
}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "orderflow ingest",
        "version": "1",
        "description": "Every /orders operation needs an API key (`Authorization: Bearer KEY`) with "
        "its scope; admin has every scope. This document, /healthz and /readyz need none; /metrics "
        "is on a port of its own (ORDERFLOW_METRICS_PORT). An ingest without ORDERFLOW_API_KEYS_FILE "
        "(loopback only, or ORDERFLOW_AUTH_OPEN) asks for no key. Any request may also be answered "
        "408, 414 or 431 by the ingest's edge, and 503 past its connection cap.",
    },
    "components": {
        "securitySchemes": {
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key minted with `orderflow keys new NAME --scope ...`; scopes "
                "orders:write (POST /orders), orders:read (GET /orders/{id}, ?wait and /events of the "
                "key's own orders), admin (every order, the full record)",
            }
        }
    },
    "paths": {
        "/orders": {
            "post": {
                "operationId": "createOrder",
                "security": _write["security"],
                "summary": "Accept an order; 200 only once JetStream has stored it.",
                "description": "With an Idempotency-Key (IETF httpapi draft semantics) the order id is "
                "`key-<key>` (never an id the ingest generates); a repeat with the same body answers 200 "
                "with the same id and stores nothing, for as long as the order's status is kept "
                "(ORDERFLOW_STATUS_TTL_S, 7 days); the same key with another body answers 422 for that "
                "whole span; the same key while its first request is still in flight answers 409. "
                "A 503 may have been stored nonetheless (its PubAck came late): send an Idempotency-Key "
                "to retry safely.",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "maxLength": contract.MAX_IDEMPOTENCY_KEY,
                            "pattern": r"^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$",
                        },
                        "example": "checkout-4711",
                    },
                    {"name": "type", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {_json: {"schema": SEED_ORDER}}},
                "responses": {
                    "200": s.answer(
                        "stored durably (JetStream PubAck received)",
                        {**s.CREATED, "examples": [{"result": "created", "order_id": "key-checkout-4711"}]},
                    ),
                    "400": s.answer("invalid: every bad field, header or parameter named", s.INVALID),
                    "401": _write["401"],
                    "403": _write["403"],
                    "409": s.answer(
                        "a request with this Idempotency-Key is still in flight; retry after Retry-After "
                        "seconds",
                        s.key_problem("in-flight"),
                        retry_after=True,
                    ),
                    "413": s.answer(f"body over {contract.MAX_BODY_BYTES} bytes", s.TOO_LARGE),
                    "422": s.answer(
                        "this Idempotency-Key was used with a different request body; nothing was stored",
                        s.key_problem("idempotency-key-reused"),
                    ),
                    "500": s.answer("direct mode (ORDERFLOW_MODE=direct) over its capacity", s.KAPUT),
                    **s.EDGE,
                    "503": s.UNAVAILABLE,
                },
            }
        },
        "/orders/{order_id}": {
            "get": {
                "operationId": "getOrder",
                "security": _read["security"],
                "summary": "The order as it is, or (?wait=S) once it is final.",
                "description": "Only the API key that created the order sees it (another key gets "
                "404, as for an unknown id), with the fields a client may see: status, times, counts, "
                "a result and an error class. An admin key sees every order's full record (worker, "
                "checkpoint, error text).",
                "parameters": [_order_id, _wait],
                "responses": {
                    "200": s.answer(
                        "the order's status record, or `queued` while only its message is in the stream. "
                        "Timestamps are ISO 8601 UTC with their epoch seconds beside them (`x_at`, "
                        "`x_at_s`).",
                        s.ORDER_VIEW,
                    ),
                    "400": s.answer("?wait is not a number of seconds from 0 to 60", s.INVALID),
                    "401": _read["401"],
                    "403": _read["403"],
                    "404": _unknown,
                    **s.EDGE,
                    "503": s.UNAVAILABLE,
                },
            }
        },
        "/orders/{order_id}/events": {
            "get": {
                "operationId": "orderEvents",
                "security": _read["security"],
                "summary": "The order's status changes as Server-Sent Events, until its final status.",
                "description": "`event: status` with the order (as GET shows it) as `data` and a "
                "sequence as `id`: the current status first, then each change (a lease refresh is not "
                "one); a `: keepalive` comment every 15 s; the stream closes after a final status, or "
                "when the ingest shuts down (ask again). The same identity rules as GET.",
                "parameters": [_order_id],
                "responses": {
                    "200": {
                        "description": "the event stream",
                        "content": {
                            "text/event-stream": {
                                "schema": s.EVENT,
                                "example": 'event: status\nid: 1\ndata: {"order_id":"01JEX9R7Q3V5Z0000000000000",'
                                '"status":"done","failed_attempts":0,"runs":1}\n\n',
                            }
                        },
                    },
                    "401": _read["401"],
                    "403": _read["403"],
                    "404": _unknown,
                    **s.EDGE,
                    "503": s.UNAVAILABLE,
                },
            }
        },
        "/healthz": {
            "get": {
                "security": [],
                "responses": {
                    "200": s.answer("process alive", s.PROBE),
                    "503": s.answer("unhealthy (the reason)", s.PROBE),
                    **s.EDGE,
                },
            }
        },
        "/readyz": {
            "get": {
                "security": [],
                "responses": {
                    "200": s.answer("ready", s.PROBE),
                    "503": s.answer("not ready (the reason)", s.PROBE),
                    **s.EDGE,
                },
            }
        },
    },
}


def document(
    task_types: Sequence[str], declared: Mapping[str, dict[str, Any]], batch_max_orders: int = 1000
) -> dict[str, Any]:
    """The document for these task types (the first is the default), with their declared payloads."""
    doc = copy.deepcopy(OPENAPI)
    doc["paths"]["/orders/batch"] = batchapi.operation(batch_max_orders)
    for parameter in doc["paths"]["/orders/batch"]["post"]["parameters"]:
        if parameter["name"] == "type":
            parameter["schema"] = {"type": "string", "enum": list(task_types), "default": task_types[0]}
    components: dict[str, Any] = {"Order": copy.deepcopy(SEED_ORDER)}
    refs: dict[str, Any] = {}
    for task_type in task_types:
        schema = declared.get(task_type)
        if schema is None:
            refs[task_type] = {"$ref": "#/components/schemas/Order"}
            continue
        name = f"payload.{task_type}"
        components[name] = _hoisted(schema, name + ".", components)
        refs[task_type] = {"$ref": f"#/components/schemas/{name}"}
    post = doc["paths"]["/orders"]["post"]
    default = declared.get(task_types[0])
    if default is not None:
        post["requestBody"]["content"][_json]["schema"] = refs[task_types[0]]
    for parameter in post["parameters"]:
        if parameter["name"] == "type":
            parameter["schema"] = {"type": "string", "enum": list(task_types), "default": task_types[0]}
            parameter["description"] = (
                "The task type; the body is its payload (x-orderflow-payloads). An unknown type answers "
                "400 naming the known ones."
            )
    post["x-orderflow-payloads"] = refs
    doc["components"]["schemas"] = components  # beside the securitySchemes
    return doc


_REF_ROOTS = ("#/$defs/", "#/definitions/")


def _component(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _hoisted(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """`schema` without its `$defs`/`definitions` (moved to components as prefix + name) and with
    its references to them pointed there: `#/$defs/X` would resolve against the document's root."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    components[_component(prefix + name)] = walk(sub)
            elif key == "$ref" and isinstance(value, str) and value.startswith(_REF_ROOTS):
                name = value.split("/", 2)[2]
                out[key] = "#/components/schemas/" + _component(prefix + name)
            elif key != "$schema":
                out[key] = walk(value)
        return out

    result: dict[str, Any] = walk(schema)
    return result
