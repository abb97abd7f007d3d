"""HTTP endpoints of the ingest (SPEC §2)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec
from nats.js.errors import KeyNotFoundError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from ingest.openapi import OPENAPI
from orderflow import contract

if TYPE_CHECKING:
    from ingest.app import IngestState

_JSON = "application/json"
_KAPUT = b'{"result":"server-kaput"}'


def _json(body: Any, status: int = 200) -> Response:
    return Response(contract.encode(body), status, media_type=_JSON)


def _state(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


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


def _unavailable(state: IngestState) -> Response:
    return Response(_KAPUT, 503, headers={"Retry-After": str(state.settings.retry_after_s)}, media_type=_JSON)


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
    return Response(generate_latest(_state(request).metrics.exposition), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return _json(OPENAPI)
