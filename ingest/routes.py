"""HTTP endpoints of the ingest (SPEC §2)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

import msgspec
from nats.js.errors import KeyNotFoundError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ingest.openapi import OPENAPI
from ingest.publisher import Published
from orderflow import contract

if TYPE_CHECKING:
    from ingest.app import IngestState

_JSON = "application/json"
_KAPUT = b'{"result":"server-kaput"}'


class TooLarge(Exception):
    pass


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(contract.encode(body), status, headers, media_type=_JSON)


def _invalid(*errors: contract.FieldError) -> Response:
    return _json({"result": "invalid", "errors": errors}, 400)


def _state(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


async def _read_body(request: Request) -> bytes:
    """Read at most MAX_BODY_BYTES; raise TooLarge past it, whatever Content-Length claimed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > contract.MAX_BODY_BYTES:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > contract.MAX_BODY_BYTES:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class TokenBucket:
    """direct mode's capacity: `rate` per second with a one-second burst, like the seed's 50 RPS box."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


async def post_order(request: Request) -> Response:
    state = _state(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not contract.valid_order_id(key):
        return _invalid(
            contract.FieldError(
                "Idempotency-Key", "must be 1..128 characters of letters, digits, '-', '_', '=' and inner dots"
            )
        )
    task_type = request.query_params.get("type") or state.default_type
    if state.settings.task_type(task_type) is None:
        names = ", ".join(t.name for t in state.settings.task_types)
        return _invalid(contract.FieldError("type", f"unknown task type; one of: {names}"))
    try:
        body = await _read_body(request)
    except TooLarge:
        return _json({"result": "too-large", "limit_bytes": contract.MAX_BODY_BYTES}, 413)
    except ClientDisconnect:
        return Response(status_code=400)
    order = contract.validate_order(body, key or state.new_id())
    if isinstance(order, list):
        return _invalid(*order)

    if state.direct is not None:
        return await _direct(state, order)
    if state.publisher is None:
        return _unavailable(state)
    result = await state.publisher.publish(order, task_type)
    if result.stored:
        return _json({"result": "created", "order_id": order.order_id})
    return _unavailable(state)


async def _direct(state: IngestState, order: contract.Order) -> Response:
    """The seed's part 1: do the work inline, answer 500 above the box's capacity."""
    assert state.direct is not None
    if not state.direct.take():
        state.metrics.work_done.labels("error").inc()
        return Response(_KAPUT, 500, media_type=_JSON)
    work = state.settings.work_s
    await asyncio.sleep(random.uniform(work.min_s, work.max_s))
    state.metrics.work_done.labels("done").inc()
    return _json({"result": "created", "order_id": order.order_id})


def _unavailable(state: IngestState) -> Response:
    return Response(
        _KAPUT, 503, headers={"Retry-After": str(state.settings.retry_after_s)}, media_type=_JSON
    )


async def get_order(request: Request) -> Response:
    state = _state(request)
    order_id = request.path_params["order_id"]
    if not contract.valid_order_id(order_id):
        return _json({"result": "not-found", "order_id": order_id}, 404)
    if state.kv is None or not state.connected:
        return _unavailable(state)
    try:
        entry = await state.kv.get(order_id)
    except KeyNotFoundError:
        return _json({"result": "not-found", "order_id": order_id}, 404)
    except Exception:
        return _unavailable(state)
    try:
        record = contract.decode_status(entry.value or b"")
    except msgspec.MsgspecError:
        return _unavailable(state)
    return _json(record)


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _state(request)
    problem = await state.not_ready()
    if problem:
        return _json({"status": "not-ready", "reason": problem}, 503)
    return _json({"status": "ready"})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return _json(OPENAPI)
