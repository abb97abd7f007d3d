"""POST /orders, the hot path, as a plain ASGI handler in front of Starlette: no router, middleware
chain, Request or Response objects per order (bench/ingest shows what that buys). It counts its
own responses in the same metrics the Starlette routes use.

The request is read and validated here; what accepting an order means is the mode's: queued
(`QueuedOrders`, publish and wait for the PubAck) or direct (ingest/direct.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from ingest import callbacks, delay, responses
from ingest.keys import Claim, Outcome
from ingest.state import IngestState
from orderflow import auth, contract, validation

ROUTE = "/orders"
PATHS = (ROUTE, ROUTE + "/")  # `/orders/` is `/orders`

# (order, task type, whether the client gave an Idempotency-Key, the API key's name) -> (status, body)
Accept = Callable[[contract.Order | contract.TypedOrder, str, bool, str | None], Awaitable[tuple[int, bytes]]]


def query_of(scope: Scope) -> dict[str, list[str]]:
    """The request's query parameters (none parsed when there is no query string)."""
    return parse_qs(scope["query_string"].decode("latin-1")) if scope["query_string"] else {}


def requested_type(state: IngestState, query: dict[str, list[str]]) -> str | None:
    """The task type `?type=` names (the default one without it); None if it names no type."""
    task_type = query["type"][0] if "type" in query else state.default_type
    return task_type if task_type in state.task_types else None


class _Disconnected(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request's body (POST /orders, POST /orders/batch), or None once it passes `limit` bytes:
    the caller answers 413 and reads no more. Raises _Disconnected when the client goes first."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


class QueuedOrders:
    """Queued mode: 200 only once JetStream has stored the order, else 503 (+ Retry-After). A keyed
    order (Idempotency-Key) first claims its key (ingest/keys.py); an order without one pays for
    nothing but its publish."""

    def __init__(self, state: IngestState) -> None:
        self.state = state
        self._keyed = {o: state.metrics.idempotent_requests.labels(o.value) for o in Outcome}

    async def __call__(
        self,
        order: contract.Order | contract.TypedOrder,
        task_type: str,
        keyed: bool,
        client: str | None,
        run_at: float | None = None,
    ) -> tuple[int, bytes]:
        """`run_at`: a delayed order's due time (ingest/delay.py), stored as a scheduled message."""
        publisher = self.state.publisher
        keys = self.state.keys
        if publisher is None or keys is None:
            self.state.refusals.note("nats_down", "not connected yet")
            return 503, responses.KAPUT
        if not keyed:
            result = await publisher.publish(order, task_type, client=client, run_at=run_at)
            return (200, responses.created(order.order_id)) if result.stored else (503, responses.KAPUT)
        try:
            claim = await keys.claim(order, task_type, client)
        except Exception as exc:  # the key store or the lookup did not answer
            self.state.refusals.note("nats_down", f"Idempotency-Key lookup failed: {exc!r}")
            claim = Claim(Outcome.UNAVAILABLE)
        self._keyed[claim.outcome].inc()
        outcome = claim.outcome
        # the id the key names (a record written before keyed ids had their namespace names the key)
        order_id = claim.record.order_id if claim.record is not None else order.order_id
        if outcome is Outcome.REPLAY:
            return 200, responses.created(order_id)
        if outcome is Outcome.MISMATCH:
            return 422, responses.key_reused(order_id)
        if outcome is Outcome.IN_FLIGHT:
            return 409, responses.key_in_flight(order_id)
        if outcome is Outcome.UNAVAILABLE:
            return 503, responses.KAPUT
        result = await publisher.publish(order, task_type, status_check=True, client=client, run_at=run_at)
        if result.stored:
            return 200, responses.created(order.order_id)
        await keys.failed(claim)
        return 503, responses.KAPUT


class OrdersEndpoint:
    def __init__(self, state: IngestState, accept: Accept) -> None:
        self.state = state
        self.accept = accept
        metrics = state.metrics
        self._by_status: dict[int, Any] = {}
        self._requests = metrics.http_requests
        self._observe = metrics.http_duration.labels(ROUTE).observe
        self._retry_after = str(state.settings.retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        try:
            status, body = await self._handle(scope, receive)
        except _Disconnected:
            return  # the client left before sending its body; there is no one to answer
        headers = [responses.JSON, (b"content-length", str(len(body)).encode())]
        if status == 503 or status == 409:
            headers.append((b"retry-after", self._retry_after))
        elif status == 401 or status == 403:
            headers.append(responses.CHALLENGES[body])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(ROUTE, "POST", str(status))
        child.inc()
        tracer = self.state.tracer  # a sampled request's trace id: the duration's exemplar
        self._observe(time.perf_counter() - start, None if tracer is None else tracer.exemplar())

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        state = self.state
        key: str | None = None
        authorization: bytes | None = None
        too_large = False
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                key = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length" and value.isdigit() and int(value) > contract.MAX_BODY_BYTES:
                too_large = True
        # Who asks comes first: nothing else about the request is answered to a client without a key.
        identity = state.access.check(authorization, auth.WRITE)
        if isinstance(identity, tuple):
            return identity
        if too_large:
            return 413, responses.TOO_LARGE
        if key is not None and not contract.valid_key(key):
            return 400, responses.invalid([responses.BAD_KEY])
        task_type = requested_type(state, query_of(scope))
        if task_type is None:
            return 400, responses.unknown_type(state.task_types)

        body = await read_body(receive, contract.MAX_BODY_BYTES)
        if body is None:
            return 413, responses.TOO_LARGE

        taken = callbacks.resolve(body, identity, state.settings)
        if isinstance(taken, contract.FieldError):
            return 400, responses.invalid([taken])
        body, callback_url = taken
        due = delay.take(body, state.settings, time.time())
        if isinstance(due, contract.FieldError):
            return 400, responses.invalid([due])
        body, run_at = due
        # The type's declared payload, if it has one (ingest/payloads.py); else the seed's order.
        schema = state.payloads.get(task_type) if state.payloads else None
        order_id = state.new_id() if key is None else contract.keyed_order_id(key)
        order = (
            validation.validate_order(body, order_id) if schema is None else schema.validate(body, order_id)
        )
        if isinstance(order, list):
            return 400, responses.invalid(order)
        order = callbacks.attach(order, callback_url, identity)
        if run_at is None:
            return await self.accept(order, task_type, key is not None, identity.name)
        if not isinstance(self.accept, QueuedOrders):  # direct mode works inline: nothing to wait in
            return 400, responses.invalid([contract.FieldError(delay.DELAY_S, "not taken in direct mode")])
        return await self.accept(order, task_type, key is not None, identity.name, run_at)
