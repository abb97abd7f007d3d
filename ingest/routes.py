"""The ingest's Starlette routes beside the hot path: GET /orders/{id} and /openapi.json (the API: README, How it works).
The probes come from orderflow/probes.py, shared with the worker."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingest import openapi as api
from ingest import responses
from ingest.state import IngestState
from orderflow import auth, contract, lookup

_JSON = "application/json"


def _json(body: Any, status: int = 200) -> Response:
    return Response(contract.encode(body), status, media_type=_JSON)


def _state(request: Request) -> IngestState:
    state: IngestState = request.app.state.ingest
    return state


def _unavailable(state: IngestState) -> Response:
    return Response(
        responses.KAPUT, 503, headers={"Retry-After": str(state.settings.retry_after_s)}, media_type=_JSON
    )


def _refused(status: int, body: bytes) -> Response:
    name, value = responses.CHALLENGES[body]
    return Response(body, status, headers={name.decode(): value.decode()}, media_type=_JSON)


async def get_order(request: Request) -> Response:
    """The order's status record (KV), else `queued` from its message in ORDERS, else 404; shown
    with ISO 8601 UTC timestamps and their numbers (`updated_at` and `updated_at_s`).

    Only to the key that created it (or an `admin` key): another key's order is a 404, the same
    answer as an unknown id, so the API tells no one which ids exist. A client sees the allow-listed
    fields (lookup.CLIENT_FIELDS); the full record (worker, checkpoint, error text) needs `admin`."""
    state = _state(request)
    identity = state.access.check(request.headers.get("authorization", "").encode("latin-1"), auth.READ)
    if isinstance(identity, tuple):
        return _refused(*identity)
    order_id = request.path_params["order_id"]
    if not contract.valid_order_id(order_id):
        return Response(responses.not_found(order_id), 404, media_type=_JSON)
    if state.lookup is None or not state.connected:
        return _unavailable(state)
    try:
        record = await state.lookup.find(order_id)
    except Exception:  # NATS trouble or a record that is not ours: the client may retry
        return _unavailable(state)
    if record is None or not (identity.admin or record.get("client") == identity.name):
        return Response(responses.not_found(order_id), 404, media_type=_JSON)
    return _json(lookup.render(record, full=identity.admin))


async def openapi(request: Request) -> Response:
    """The API document with every task type's payload; built again only when a payload changes."""
    state = _state(request)
    catalogue = state.catalogue
    cached = state.openapi
    if cached is None or cached[0] != catalogue.version:
        declared = {t: s.schema for t, s in catalogue.schemas.items()}
        types = [t.name for t in state.settings.task_types]
        cached = state.openapi = (catalogue.version, contract.encode(api.document(types, declared)))
    return Response(cached[1], media_type=_JSON)
