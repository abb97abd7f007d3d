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

from orderflow import auth, contract

_quantity: dict[str, Any] = {
    "oneOf": [
        {"type": "integer", "minimum": contract.QUANTITY_MIN, "maximum": contract.QUANTITY_MAX},
        {"type": "string", "pattern": "^[0-9]{1,3}$", "description": "decimal string, 0..100"},
    ]
}
_kaput = {"type": "object", "properties": {"result": {"const": "server-kaput"}}, "required": ["result"]}
_invalid = {
    "type": "object",
    "required": ["result", "errors"],
    "properties": {
        "result": {"const": "invalid"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
_json = "application/json"
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
            "pattern": contract.USERNAME_PATTERN,
        },
    },
}
_refusal = {
    "type": "object",
    "required": ["result", "message"],
    "properties": {
        "result": {"enum": ["unauthorized", "forbidden"]},
        "message": {"type": "string"},
        "scope": {"enum": list(auth.SCOPES)},
    },
}
_challenge = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}


def _secured(scope: str) -> dict[str, Any]:
    """An operation behind an API key with `scope`: its security requirement and refusals."""
    return {
        "security": [{"apiKey": [scope]}],
        "401": {
            "description": "no API key, or not a valid one (`WWW-Authenticate: Bearer`)",
            "headers": _challenge,
            "content": {_json: {"schema": _refusal}},
        },
        "403": {
            "description": f"the API key does not have the {scope} scope (nor admin)",
            "headers": _challenge,
            "content": {_json: {"schema": _refusal}},
        },
    }


_write, _read = _secured(auth.WRITE), _secured(auth.READ)


def _key_problem(result: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["result", "order_id", "message"],
        "properties": {
            "result": {"const": result},
            "order_id": {"type": "string"},
            "message": {"type": "string"},
        },
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "orderflow ingest",
        "version": "1",
        "description": "Every /orders operation needs an API key (`Authorization: Bearer KEY`) with "
        "its scope; admin has every scope. This document, /healthz and /readyz need none; /metrics "
        "is on a port of its own (ORDERFLOW_METRICS_PORT). An ingest without ORDERFLOW_API_KEYS_FILE "
        "(loopback only, or ORDERFLOW_AUTH_OPEN) asks for no key.",
    },
    "components": {
        "securitySchemes": {
            "apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key minted with `orderflow keys new NAME --scope ...`; scopes "
                "orders:write (POST /orders), orders:read (GET /orders/{id} of the key's own orders), "
                "admin (every order, the full record)",
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
                "whole span; the same key while its first request is still in flight answers 409.",
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
                    },
                    {"name": "type", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {_json: {"schema": SEED_ORDER}}},
                "responses": {
                    "200": {
                        "description": "stored durably (JetStream PubAck received)",
                        "content": {
                            _json: {
                                "schema": {
                                    "type": "object",
                                    "required": ["result", "order_id"],
                                    "properties": {
                                        "result": {"const": "created"},
                                        "order_id": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "400": {"description": "invalid", "content": {_json: {"schema": _invalid}}},
                    "401": _write["401"],
                    "403": _write["403"],
                    "409": {
                        "description": "a request with this Idempotency-Key is still in flight; retry after "
                        "Retry-After seconds",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {_json: {"schema": _key_problem("in-flight")}},
                    },
                    "413": {"description": f"body over {contract.MAX_BODY_BYTES} bytes"},
                    "422": {
                        "description": "this Idempotency-Key was used with a different request body; "
                        "nothing was stored",
                        "content": {_json: {"schema": _key_problem("idempotency-key-reused")}},
                    },
                    "500": {
                        "description": "direct mode over capacity",
                        "content": {_json: {"schema": _kaput}},
                    },
                    "503": {
                        "description": "queued mode, cannot store now; retry after Retry-After seconds",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {_json: {"schema": _kaput}},
                    },
                },
            }
        },
        "/orders/{order_id}": {
            "get": {
                "operationId": "getOrder",
                "security": _read["security"],
                "description": "Only the API key that created the order sees it (another key gets "
                "404, as for an unknown id), with the fields a client may see: status, times, counts, "
                "a result and an error class. An admin key sees every order's full record (worker, "
                "checkpoint, error text).",
                "parameters": [
                    {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the order's status: its status record, or `queued` while only its "
                        "message is in the stream. Timestamps are ISO 8601 UTC with the number of epoch "
                        "seconds beside them (`updated_at` and `updated_at_s`); whatever counts the record "
                        "carries (attempts, deliveries, ...) are shown as stored.",
                        "content": {
                            _json: {
                                "schema": {
                                    "type": "object",
                                    "required": ["order_id", "status"],
                                    "properties": {
                                        "order_id": {"type": "string"},
                                        "status": {"enum": list(contract.STATUSES)},
                                        "attempts": {"type": "integer"},
                                        "updated_at": {"type": "string", "format": "date-time"},
                                        "updated_at_s": {"type": "number"},
                                        "task_type": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "401": _read["401"],
                    "403": _read["403"],
                    "404": {"description": "unknown order, or another API key's"},
                    "503": {"description": "status store unreachable"},
                },
            }
        },
        "/healthz": {"get": {"security": [], "responses": {"200": {"description": "process alive"}}}},
        "/readyz": {
            "get": {
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
    },
}


def document(task_types: Sequence[str], declared: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The document for these task types (the first is the default), with their declared payloads."""
    doc = copy.deepcopy(OPENAPI)
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
