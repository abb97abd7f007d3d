"""The ingest's Starlette routes beside the hot path: GET /orders/{id} and /openapi.json (the API: README, How it works).
The probes come from orderflow/probes.py, shared with the worker."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ingest import openapi as api
from ingest import responses, waiting
from ingest.state import IngestState
from ingest.watch import Full
from orderflow import auth, contract, lookup
from orderflow.auth import Identity

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
    with ISO 8601 UTC timestamps and their numbers (`updated_at` and `updated_at_s`). With
    `?wait=S` (0..60) answered once the order is final or S seconds have passed (ingest/waiting.py).

    Only to the key that created it (or an `admin` key): another key's order is a 404, the same
    answer as an unknown id, so the API tells no one which ids exist. A client sees the allow-listed
    fields (lookup.CLIENT_FIELDS); the full record (worker, checkpoint, error text) needs `admin`."""
    state = _state(request)
    identity = _identity(request, state)
    if isinstance(identity, Response):
        return identity
    order_id = request.path_params["order_id"]
    wait_s: float | None = None
    if "wait" in request.query_params:
        wait_s = waiting.wait_of(request.query_params.getlist("wait"))
        if wait_s is None:
            return Response(responses.invalid([waiting.BAD_WAIT]), 400, media_type=_JSON)
    found = await _find(state, identity, order_id)
    if isinstance(found, Response):
        return found
    record = found
    if wait_s and record.get("status") not in waiting.FINAL:
        if not (state.watch.running or state.watch.closed):
            return _unavailable(state)
        try:
            with state.watch.register(order_id) as waiter:
                # read again once registered: a change from now on is in the queue
                record = await _find(state, identity, order_id, record)
                record = await waiting.until_final(waiter.updates, record, wait_s)
            if record.get("status") not in waiting.FINAL:
                # the watch may have missed a write (its consumer re-created after a reconnect):
                # answer what the store says now, not only what the watch delivered
                record = await _find(state, identity, order_id, record)
        except Full:
            return waiting.busy(state.settings.retry_after_s)
    return _json(lookup.render(record, full=identity.admin))


async def order_events(request: Request) -> Response:
    """The order's status changes as Server-Sent Events until its final one (ingest/waiting.py);
    the same identity and the same view as GET /orders/{id}."""
    state = _state(request)
    identity = _identity(request, state)
    if isinstance(identity, Response):
        return identity
    order_id = request.path_params["order_id"]
    found = await _find(state, identity, order_id)
    if isinstance(found, Response):
        return found
    watch = state.watch
    if not (watch.running or watch.closed) or state.lookup is None:
        return _unavailable(state)
    if watch.count >= watch.cap:
        return waiting.busy(state.settings.retry_after_s)

    def show(record: dict[str, Any]) -> dict[str, Any]:
        return lookup.render(record, full=identity.admin)

    return waiting.sse(waiting.stream(watch, order_id, state.lookup.find, show, found))


def _identity(request: Request, state: IngestState) -> Identity | Response:
    """Who asks, if the key may read orders (orders:read or admin); else the 401/403 to answer."""
    identity = state.access.check(request.headers.get("authorization", "").encode("latin-1"), auth.READ)
    return _refused(*identity) if isinstance(identity, tuple) else identity


async def _find(
    state: IngestState, identity: Identity, order_id: str, known: dict[str, Any] | None = None
) -> Any:
    """The order's record, else its 404 (unknown, or another key's) or 503 answer; with `known`, a
    record already found and shown, that one when the store cannot be read now."""
    if not contract.valid_order_id(order_id):
        return Response(responses.not_found(order_id), 404, media_type=_JSON)
    if state.lookup is None or not state.connected:
        return known or _unavailable(state)
    try:
        record = await state.lookup.find(order_id)
    except Exception:  # NATS trouble or a record that is not ours: the client may retry
        return known or _unavailable(state)
    if record is None:
        return known or Response(responses.not_found(order_id), 404, media_type=_JSON)
    if not (identity.admin or record.get("client") == identity.name):
        return Response(responses.not_found(order_id), 404, media_type=_JSON)
    return record


async def openapi(request: Request) -> Response:
    """The API document with every task type's payload; built again only when a payload changes."""
    state = _state(request)
    catalogue = state.catalogue
    cached = state.openapi
    if cached is None or cached[0] != catalogue.version:
        declared = {t: s.schema for t, s in catalogue.schemas.items()}
        types = [t.name for t in state.settings.task_types]
        cached = state.openapi = (
            catalogue.version,
            contract.encode(api.document(types, declared, state.settings.batch_max_orders)),
        )
    return Response(cached[1], media_type=_JSON)
