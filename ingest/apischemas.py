"""The bodies of the ingest's answers as JSON Schema, for /openapi.json (ingest/openapi.py): the
order view field by field, and every refusal with its status. Each is the schema of a body that
ingest/responses.py, the edge (orderflow/edgeprotocol.py) or the probes write; schemathesis checks
the real answers against them (tests/fuzz/test_schemathesis.py)."""

from __future__ import annotations

from typing import Any

from orderflow import auth, contract

JSON = "application/json"
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
}


def _result(result: str | list[str], **fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["result", *fields],
        "properties": {
            "result": {"const": result} if isinstance(result, str) else {"enum": result},
            **fields,
        },
    }


_STRING = {"type": "string"}
KAPUT = _result("server-kaput")
TOO_MANY_WAITERS = _result("too-many-waiters", message=_STRING)
INVALID = _result(
    "invalid",
    errors={
        "type": "array",
        "items": {
            "type": "object",
            "required": ["field", "message"],
            "properties": {
                "field": {"type": "string", "description": "the field, header or query parameter"},
                "message": {"type": "string"},
            },
        },
    },
)
NOT_FOUND = _result("not-found", order_id=_STRING)
CREATED = _result("created", order_id=_STRING)
REFUSAL = {
    "type": "object",
    "required": ["result", "message"],
    "properties": {
        "result": {"enum": ["unauthorized", "forbidden"]},
        "message": _STRING,
        "scope": {"enum": list(auth.SCOPES)},
    },
}
TOO_LARGE = _result("too-large", limit_bytes={"const": contract.MAX_BODY_BYTES})
TIMEOUT = _result("request-timeout")
URI_TOO_LONG = _result("uri-too-long")
HEAD_TOO_LARGE = _result("request-header-fields-too-large")
PROBE = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["ok", "ready", "unhealthy", "not-ready"]}, "reason": _STRING},
}


def answer(description: str, schema: dict[str, Any], retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if retry_after:
        out["headers"] = _RETRY_AFTER
    return out


def key_problem(result: str) -> dict[str, Any]:
    """An Idempotency-Key's 409 or 422."""
    return _result(result, order_id=_STRING, message=_STRING)


_CHALLENGE = {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}


def secured(scope: str) -> dict[str, Any]:
    """An operation behind an API key with `scope`: its security requirement and refusals."""
    refused = {"headers": _CHALLENGE, "content": {JSON: {"schema": REFUSAL}}}
    return {
        "security": [{"apiKey": [scope]}],
        "401": {"description": "no API key, or not a valid one (`WWW-Authenticate: Bearer`)", **refused},
        "403": {"description": f"the API key does not have the {scope} scope (nor admin)", **refused},
    }


# What the edge answers for any request, before a route sees it (orderflow/edgeprotocol.py).
EDGE = {
    "408": answer("the request's head or body did not arrive within its deadline", TIMEOUT),
    "414": answer("the URL is over ORDERFLOW_HTTP_MAX_URL_BYTES", URI_TOO_LONG),
    "431": answer(
        "the request line and headers are over ORDERFLOW_HTTP_MAX_HEAD_BYTES, or more than "
        "ORDERFLOW_HTTP_MAX_HEADERS headers",
        HEAD_TOO_LARGE,
    ),
}
UNAVAILABLE = answer(
    "cannot answer now (NATS unreachable, the connection cap, or too many clients waiting on "
    "orders: `too-many-waiters`); retry after Retry-After seconds",
    {"oneOf": [KAPUT, TOO_MANY_WAITERS]},
    retry_after=True,
)

_TIME = {"type": "string", "format": "date-time", "examples": ["2026-12-06T01:23:45.678Z"]}
_EPOCH = {"type": "number", "description": "the same time as epoch seconds"}
_COUNT = {"type": "integer", "minimum": 0}


def _times(**described: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, description in described.items():
        out[name] = {**_TIME, "description": description}
        out[name + "_s"] = _EPOCH
    return out


# Every field the order view may carry. A client key sees CLIENT (orderflow/lookup.py's
# CLIENT_FIELDS); an admin key, or an ingest without keys, the whole record.
ORDER_VIEW: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "status", "failed_attempts", "runs", "deliveries", "handbacks", "crashes"],
    "properties": {
        "order_id": _STRING,
        "status": {
            "enum": list(contract.STATUSES),
            "description": "final: " + ", ".join(sorted(contract.FINAL_STATUSES)),
        },
        "task_type": _STRING,
        "failed_attempts": {**_COUNT, "description": "runs that failed (a handler error or a timeout)"},
        "attempts": {**_COUNT, "deprecated": True, "description": "the old name of failed_attempts"},
        "runs": {**_COUNT, "description": "how many times a handler was started for it, every outcome"},
        "deliveries": {**_COUNT, "description": "how many times it was delivered to a worker"},
        "handbacks": {**_COUNT, "description": "runs handed back unfinished by a draining worker"},
        "crashes": {**_COUNT, "description": "runs whose worker died"},
        **_times(
            created_at="when the ingest accepted it",
            updated_at="when this record was written",
            first_started_at="when its first run started",
            last_started_at="when its latest run started",
            started_at="the old name of last_started_at",
            finished_at="when it reached its final status",
            retry_at="when a failed attempt is tried again",
            run_at="when a delayed order (status scheduled) is due to run",
            lease_until="(admin) until when its running worker holds it",
            checkpoint_at="(admin) when its last checkpoint was stored",
        ),
        "total_run_s": {"type": "number", "minimum": 0, "description": "seconds of all its runs together"},
        "run_s": {
            "type": "number",
            "minimum": 0,
            "deprecated": True,
            "description": "old name of total_run_s",
        },
        "result": {"description": "what the handler returned (any JSON value, at most 64 KiB), once done"},
        "error_class": {
            "type": "string",
            "description": "what kind of error ended its last run: handler_error, timeout, invalid_order, "
            "worker_error, gave_up, cancelled, handed_back",
        },
        "error": {"type": "string", "description": "(admin) the last error's text"},
        "worker_id": {"type": "string", "description": "(admin) the worker that wrote this record"},
        "client": {"type": "string", "description": "(admin) the API key that created it"},
        "checkpoint": {"description": "(admin) the handler's last checkpoint (JSON)"},
        "scheduled": {"type": "boolean", "description": "(admin) its retry waits as a scheduled message"},
    },
    "examples": [
        {
            "order_id": "01JEX9R7Q3V5Z0000000000000",
            "status": "done",
            "task_type": "default",
            "failed_attempts": 1,
            "attempts": 1,
            "runs": 2,
            "deliveries": 2,
            "handbacks": 0,
            "crashes": 0,
            "first_started_at": "2026-12-06T01:23:45.678Z",
            "first_started_at_s": 1796520225.678,
            "last_started_at": "2026-12-06T01:23:47.001Z",
            "last_started_at_s": 1796520227.001,
            "finished_at": "2026-12-06T01:23:48.120Z",
            "finished_at_s": 1796520228.12,
            "total_run_s": 2.3,
            "result": {"invoice": "INV-7"},
        }
    ],
}

# One Server-Sent Event of /orders/{id}/events (a `: keepalive` comment is no event).
EVENT = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "status"},
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "1, 2, ... within the stream"},
        "data": {
            "type": "string",
            "description": "the order as GET /orders/{id} shows it, as JSON",
            "contentMediaType": JSON,
            "contentSchema": ORDER_VIEW,
        },
    },
}
