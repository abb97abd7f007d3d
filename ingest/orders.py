"""POST /orders, the hot path, as a plain ASGI handler in front of Starlette: no router, middleware
chain, Request or Response objects per order (bench/ingest shows what that buys). It counts its
own responses in the same metrics the Starlette routes use."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from orderflow import contract

if TYPE_CHECKING:
    from ingest.app import IngestState

ROUTE = "/orders"
_JSON = (b"content-type", b"application/json")
_KAPUT = b'{"result":"server-kaput"}'
_TOO_LARGE = contract.encode({"result": "too-large", "limit_bytes": contract.MAX_BODY_BYTES})
_BAD_KEY = contract.FieldError(
    "Idempotency-Key", "must be 1..128 characters of letters, digits, '-', '_', '=' and inner dots"
)


class _Disconnected(Exception):
    pass


def _invalid(errors: Any) -> tuple[int, bytes]:
    return 400, contract.encode({"result": "invalid", "errors": errors})


class OrdersEndpoint:
    def __init__(self, state: IngestState) -> None:
        self.state = state
        metrics = state.metrics
        self._by_status: dict[int, Any] = {}
        self._requests = metrics.http_requests
        self._observe = metrics.http_duration.labels(ROUTE).observe
        self._retry_after = str(state.settings.retry_after_s).encode()
        self._types = {t.name for t in state.settings.task_types}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        try:
            status, body = await self._handle(scope, receive)
        except _Disconnected:
            return  # the client left before sending its body; there is no one to answer
        headers = [_JSON, (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", self._retry_after))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self._requests.labels(ROUTE, "POST", str(status))
        child.inc()
        self._observe(time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        state = self.state
        key: str | None = None
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                key = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit() and int(value) > contract.MAX_BODY_BYTES:
                return 413, _TOO_LARGE
        if key is not None and not contract.valid_order_id(key):
            return _invalid([_BAD_KEY])
        task_type = state.default_type
        if scope["query_string"]:
            query = parse_qs(scope["query_string"].decode("latin-1"))
            if "type" in query:
                task_type = query["type"][0]
                if task_type not in self._types:
                    names = ", ".join(sorted(self._types))
                    return _invalid([contract.FieldError("type", f"unknown task type; one of: {names}")])

        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > contract.MAX_BODY_BYTES:
                return 413, _TOO_LARGE
            body += chunk
            more = message.get("more_body", False)

        order = contract.validate_order(body, key or state.new_id())
        if isinstance(order, list):
            return _invalid(order)
        if state.direct is not None:
            return await self._direct(order)
        publisher = state.publisher
        if publisher is None:
            return 503, _KAPUT
        result = await publisher.publish(order, task_type)
        if result.stored:
            return 200, b'{"result":"created","order_id":"' + order.order_id.encode() + b'"}'
        return 503, _KAPUT

    async def _direct(self, order: contract.Order) -> tuple[int, bytes]:
        """The seed's part 1: do the work inline, answer 500 above the box's capacity."""
        state = self.state
        assert state.direct is not None
        if not state.direct.take():
            state.metrics.work_done.labels("error").inc()
            return 500, _KAPUT
        work = state.settings.work_s
        await asyncio.sleep(random.uniform(work.min_s, work.max_s))
        state.metrics.work_done.labels("done").inc()
        return 200, contract.encode({"result": "created", "order_id": order.order_id})
