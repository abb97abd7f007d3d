"""POST /orders/batch: up to ORDERFLOW_BATCH_MAX_ORDERS orders in one request, each validated as
POST /orders validates one, answered once every valid item is stored.

Body: `{"orders": [{"order": {...}, "idempotency_key": "k"?}, ...]}`. Answer: `{"mode", "items"}`,
the items in the request's order, each `created` (with its id), `invalid` (its field errors), or
what a keyed POST /orders would have answered (`idempotency-key-reused`, `in-flight`).

Two modes, named in the answer:
- `atomic`: no item carries an Idempotency-Key and ORDERS takes atomic batches (nats-server
  2.12+): the valid items are one JetStream atomic batch, stored all or nothing. A 503 stored none.
- `pipelined`: asked for (`?mode=pipelined`: faster where the store syncs each atomic commit to
  disk, which nats-server does: bench/batch), or an item carries a key (each key is claimed in KV ORDER_KEYS before its publish, with
  the header's semantics, which one atomic batch cannot hold), or the server cannot do atomic
  batches, or the direct mode: every item is accepted as POST /orders accepts it, all at once. A
  503 names, per item, whether it was stored (`created`) or not (`not-stored`); resending the
  batch is safe for keyed items only, so a client that wants to resend should key them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from starlette.types import Receive, Scope, Send

from ingest import callbacks, delay, responses
from ingest.orders import Accept, _Disconnected, query_of, read_body, requested_type
from ingest.publisher import Published, message_of
from ingest.state import IngestState
from orderflow import auth, contract, validation

ROUTE = "/orders/batch"
MODES = ("atomic", "pipelined")


class _Item(msgspec.Struct, forbid_unknown_fields=True):
    order: msgspec.Raw
    idempotency_key: str | None = None


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    orders: list[_Item]


_decode = msgspec.json.Decoder(_Body)
_decode_answer = msgspec.json.Decoder(dict[str, Any])
NOT_STORED = {"result": "not-stored"}
UNKNOWN = {"result": "unknown", "message": "no answer in time: stored with the whole batch or not at all"}


def _bad(field: str, message: str) -> tuple[int, bytes]:
    return 400, responses.invalid([contract.FieldError(field, message)])


class BatchEndpoint:
    def __init__(self, state: IngestState, accept: Accept) -> None:
        self.state = state
        self.accept = accept
        self._requests = state.metrics.http_requests
        self._observe = state.metrics.http_duration.labels(ROUTE).observe
        self._retry_after = str(state.settings.retry_after_s).encode()
        self._too_large = contract.encode(
            {"result": "too-large", "limit_bytes": state.settings.batch_max_bytes}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        try:
            status, body = await self._handle(scope, receive)
        except _Disconnected:
            return
        headers = [responses.JSON, (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", self._retry_after))
        elif status == 401 or status == 403:
            headers.append(responses.CHALLENGES[body])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._requests.labels(ROUTE, "POST", str(status)).inc()
        tracer = self.state.tracer  # a sampled request's trace id: the duration's exemplar
        self._observe(time.perf_counter() - start, None if tracer is None else tracer.exemplar())

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        state = self.state
        limit = state.settings.batch_max_bytes
        authorization: bytes | None = None
        too_large = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length" and value.isdigit() and int(value) > limit:
                too_large = True
        identity = state.access.check(authorization, auth.WRITE)  # who asks, before anything else
        if isinstance(identity, tuple):
            return identity
        if too_large:
            return 413, self._too_large
        query = query_of(scope)
        task_type = requested_type(state, query)
        if task_type is None:
            return 400, responses.unknown_type(state.task_types)
        pipelined = False
        if "mode" in query:
            if query["mode"][0] not in MODES:
                return _bad("mode", "one of: atomic (the default where the server can), pipelined")
            pipelined = query["mode"][0] == "pipelined"
        body = await read_body(receive, limit)
        if body is None:
            return 413, self._too_large
        try:
            batch = _decode.decode(body)
        except msgspec.DecodeError as exc:
            return _bad("orders", f'not a batch: {{"orders": [{{"order": {{...}}}}, ...]}} ({exc})')
        most = state.settings.batch_max_orders
        if not 1 <= len(batch.orders) <= most:
            return _bad("orders", f"must hold 1 to {most} orders, not {len(batch.orders)}")
        return await self._store(batch.orders, task_type, identity, pipelined)

    async def _store(
        self, items: list[_Item], task_type: str, identity: auth.Identity, pipelined: bool
    ) -> tuple[int, bytes]:
        state = self.state
        client = identity.name
        schema = state.payloads.get(task_type) if state.payloads else None
        answers: list[dict[str, Any] | None] = []
        valid: list[tuple[int, contract.Order | contract.TypedOrder, bool]] = []
        keys: set[str] = set()
        for i, item in enumerate(items):
            key = item.idempotency_key
            if key is not None and not contract.valid_key(key):
                answers.append({"result": "invalid", "errors": [responses.BAD_KEY]})
                continue
            if key is not None and key in keys:
                error = contract.FieldError("idempotency_key", "used by an earlier item of this batch")
                answers.append({"result": "invalid", "errors": [error]})
                continue
            order_id = state.new_id() if key is None else contract.keyed_order_id(key)
            taken = callbacks.resolve(bytes(item.order), identity, state.settings)
            if isinstance(taken, contract.FieldError):
                answers.append({"result": "invalid", "errors": [taken]})
                continue
            raw, callback_url = taken
            refused = delay.refused_in_batch(raw)
            if refused is not None:
                answers.append({"result": "invalid", "errors": [refused]})
                continue
            order = (
                validation.validate_order(raw, order_id) if schema is None else schema.validate(raw, order_id)
            )
            if isinstance(order, list):
                answers.append({"result": "invalid", "errors": order})
                continue
            order = callbacks.attach(order, callback_url, identity)
            if key is not None:
                keys.add(key)
            answers.append(None)
            valid.append((i, order, key is not None))
        atomic = not (pipelined or keys) and state.atomic_batches and state.settings.mode != "direct"
        mode = "atomic" if atomic else "pipelined"
        stored_all = True
        if atomic and valid:
            stored_all = await self._atomic(valid, answers, task_type, client)
        elif valid:
            stored_all = await self._pipelined(valid, answers, task_type, client)
        body = contract.encode({"mode": mode, "items": answers})
        return (200 if stored_all else 503), body

    async def _atomic(
        self,
        valid: list[tuple[int, contract.Order | contract.TypedOrder, bool]],
        answers: list[dict[str, Any] | None],
        task_type: str,
        client: str | None,
    ) -> bool:
        publisher = self.state.publisher
        sent_result = Published.UNAVAILABLE
        if publisher is not None:
            messages = [message_of(order, task_type, False, client) for _, order, _ in valid]
            sent_result = (await publisher.publish_atomic(messages)).result
        for i, order, _ in valid:
            if sent_result.stored:
                answers[i] = {"result": "created", "order_id": order.order_id}
            else:
                answers[i] = UNKNOWN if sent_result is Published.TIMEOUT else NOT_STORED
        return sent_result.stored

    async def _pipelined(
        self,
        valid: list[tuple[int, contract.Order | contract.TypedOrder, bool]],
        answers: list[dict[str, Any] | None],
        task_type: str,
        client: str | None,
    ) -> bool:
        results = await asyncio.gather(*(self.accept(o, task_type, keyed, client) for _, o, keyed in valid))
        stored_all = True
        for (i, _, _), (status, body) in zip(valid, results, strict=True):
            if status >= 500:
                stored_all = False
                answers[i] = NOT_STORED
            else:
                answers[i] = _decode_answer.decode(body)
        return stored_all
