"""The ingest's Starlette routes beside the hot path: GET /orders/{id} and /openapi.json (SPEC §2).
The probes come from orderflow/probes.py, shared with the worker."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ingest import responses
from ingest.openapi import OPENAPI
from ingest.state import IngestState
from orderflow import contract

_JSON = "application/json"
_STATUS_STREAM = "KV_" + contract.STATUS_BUCKET


def _json(body: Any, status: int = 200) -> Response:
    return Response(contract.encode(body), status, media_type=_JSON)


def _state(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


def _unavailable(state: IngestState) -> Response:
    return Response(
        responses.KAPUT, 503, headers={"Retry-After": str(state.settings.retry_after_s)}, media_type=_JSON
    )


async def get_order(request: Request) -> Response:
    state = _state(request)
    order_id = request.path_params["order_id"]
    if not contract.valid_order_id(order_id):
        return Response(responses.not_found(order_id), 404, media_type=_JSON)
    if state.requests is None or not state.connected:
        return _unavailable(state)
    try:
        data = await state.requests.direct_get(_STATUS_STREAM, contract.STATUS_SUBJECT_PREFIX + order_id)
    except Exception:
        return _unavailable(state)
    if data is None:
        return Response(responses.not_found(order_id), 404, media_type=_JSON)
    try:
        record = contract.decode_status(data)
    except msgspec.MsgspecError:
        return _unavailable(state)
    return _json(record)


async def openapi(request: Request) -> Response:
    return _json(OPENAPI)
