"""Every answer body of the ingest's API, written once (README, How it works: Ingest). Bodies are bytes, ready to send."""

from __future__ import annotations

from collections.abc import Sequence

from orderflow import auth, contract

JSON = (b"content-type", b"application/json")

KAPUT = b'{"result":"server-kaput"}'
TOO_LARGE = contract.encode({"result": "too-large", "limit_bytes": contract.MAX_BODY_BYTES})
BAD_KEY = contract.FieldError(
    "Idempotency-Key",
    "must be 1..128 characters of letters, digits, '-', '_', '=' and inner dots, not ending in .callback",
)


# Identity (ingest/access.py): each refusal body with its RFC 6750 challenge.
NO_KEY = contract.encode(
    {"result": "unauthorized", "message": "an API key is required: Authorization: Bearer KEY"}
)
BAD_KEY_401 = contract.encode({"result": "unauthorized", "message": "the API key is not valid"})
MISSING_SCOPE = {
    scope: contract.encode(
        {"result": "forbidden", "scope": scope, "message": f"this API key does not have the {scope} scope"}
    )
    for scope in auth.SCOPES
}
_REALM = b'Bearer realm="orderflow"'
CHALLENGES: dict[bytes, tuple[bytes, bytes]] = {
    NO_KEY: (b"www-authenticate", _REALM),
    BAD_KEY_401: (b"www-authenticate", _REALM + b', error="invalid_token"'),
    **{
        body: (b"www-authenticate", _REALM + b', error="insufficient_scope", scope="' + s.encode() + b'"')
        for s, body in MISSING_SCOPE.items()
    },
}


def created(order_id: str) -> bytes:
    return b'{"result":"created","order_id":"' + order_id.encode() + b'"}'


def invalid(errors: Sequence[contract.FieldError]) -> bytes:
    return contract.encode({"result": "invalid", "errors": errors})


def not_found(order_id: str) -> bytes:
    return contract.encode({"result": "not-found", "order_id": order_id})


def unknown_type(types: set[str]) -> bytes:
    names = ", ".join(sorted(types))
    return invalid([contract.FieldError("type", f"unknown task type; one of: {names}")])


def key_reused(key: str) -> bytes:
    return contract.encode(
        {
            "result": "idempotency-key-reused",
            "order_id": key,
            "message": "this Idempotency-Key was used with a different request body",
        }
    )


def key_in_flight(key: str) -> bytes:
    return contract.encode(
        {
            "result": "in-flight",
            "order_id": key,
            "message": "a request with this Idempotency-Key is still being processed; retry later",
        }
    )


# Past ORDERFLOW_MAX_WAITERS: GET ?wait= and /events answer this with 503 + Retry-After.
TOO_MANY_WAITERS = contract.encode(
    {"result": "too-many-waiters", "message": "too many clients are waiting on orders here; retry later"}
)
