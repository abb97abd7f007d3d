"""A typed Python client of the ingest's API (`pip install 'orderflow[client]'`: httpx), sync
(`Client`) and async (`AsyncClient`) with the same methods:

    with Client("http://localhost:8080", api_key=...) as orders:
        order_id = orders.submit({"product_id": "33", "count": 3, "username": "ada"})
        view = orders.wait(order_id, timeout_s=60)  # the order's view once it is final

Why it is safe to retry: `submit` always sends an Idempotency-Key (the caller's, else one it makes
up once per call and keeps across its retries), so a 503 whose order was stored nonetheless (a
late PubAck) or a timeout is retried into the same order, never a second one. Retries wait with
exponential backoff and full jitter, or as long as the server's Retry-After says when it says.

The services never import this module (tests/orderflow/test_layering.py): httpx is the client's
dependency only."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import httpx

FINAL_STATUSES = frozenset({"done", "failed", "dead", "cancelled"})  # orderflow.contract's
RETRIED_STATUSES = frozenset({408, 409, 429, 502, 503, 504})  # 409: the same key still in flight
MAX_WAIT_PER_REQUEST_S = 60  # the ingest's bound on GET /orders/{id}?wait=


class FieldError(TypedDict):
    field: str
    message: str


class BatchItem(TypedDict, total=False):
    result: str  # "created" or "invalid"
    order_id: str
    errors: list[FieldError]


class BatchResult(TypedDict):
    mode: str  # "atomic" (all or nothing) or "pipelined" (each item on its own)
    items: list[BatchItem]


class OrderflowError(Exception):
    """An answer the client does not retry (or one it gave up on): its status and JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class InvalidOrder(OrderflowError):
    """400: `errors` names every bad field."""

    @property
    def errors(self) -> list[FieldError]:
        errors = self.body.get("errors", []) if isinstance(self.body, dict) else []
        return list(errors)


class WaitTimeout(TimeoutError):
    def __init__(self, order_id: str, last: Mapping[str, Any] | None) -> None:
        super().__init__(f"order {order_id} not final yet (last seen: {last and last.get('status')})")
        self.order_id = order_id
        self.last = last


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the pause before try n+1 is Retry-After if the answer had one
    (capped at `max_delay_s`), else full jitter over base * 2^n (capped)."""

    attempts: int = 5
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def delay_s(self, attempt: int, retry_after: str | None, rng: random.Random | None = None) -> float:
        """The pause after failed try number `attempt` (0-based)."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_delay_s)
            except ValueError:
                pass  # an HTTP date: not what the ingest sends; fall back to backoff
        ceiling = min(self.base_delay_s * 2**attempt, self.max_delay_s)
        return (rng or random).uniform(0, ceiling)

    def retried(self, status: int) -> bool:
        return status in RETRIED_STATUSES


def new_key() -> str:
    return uuid.uuid4().hex


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _raise_for(response: httpx.Response) -> None:
    if response.status_code == 400:
        raise InvalidOrder(400, _body(response))
    if response.status_code >= 300:
        raise OrderflowError(response.status_code, _body(response))


class _Base:
    def __init__(self, api_key: str | None, retry: RetryPolicy | None, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry or RetryPolicy()

    def _submit_request(
        self, order: Mapping[str, Any], task_type: str | None, key: str
    ) -> tuple[str, dict[str, Any]]:
        params = {"type": task_type} if task_type else {}
        return "/orders", {"json": dict(order), "params": params, "headers": {"Idempotency-Key": key}}

    def _batch_request(
        self, orders: Sequence[Mapping[str, Any]], keys: Sequence[str | None] | None, task_type: str | None
    ) -> tuple[str, dict[str, Any]]:
        if keys is not None and len(keys) != len(orders):
            raise ValueError(f"{len(keys)} idempotency keys for {len(orders)} orders")
        items = [
            {"order": dict(o), **({"idempotency_key": keys[i]} if keys and keys[i] else {})}
            for i, o in enumerate(orders)
        ]
        params = {"type": task_type} if task_type else {}
        return "/orders/batch", {"json": {"orders": items}, "params": params}

    def _wait_args(self, deadline: float) -> dict[str, Any]:
        """`?wait=` for what is left (whole seconds), and an HTTP timeout that outlasts it."""
        wait_s = min(max(int(deadline - time.monotonic()), 0), MAX_WAIT_PER_REQUEST_S)
        if not wait_s:
            return {}
        return {"params": {"wait": wait_s}, "timeout": self.timeout_s + wait_s}


class Client(_Base):
    """Synchronous client; `with Client(...) as c:` closes its connections."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry, timeout_s)
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError):
                if last:
                    raise
                time.sleep(self.retry.delay_s(attempt, None))
                continue
            if last or not self.retry.retried(response.status_code):
                return response
            time.sleep(self.retry.delay_s(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable")  # pragma: no cover

    def submit(
        self, order: Mapping[str, Any], task_type: str | None = None, idempotency_key: str | None = None
    ) -> str:
        """Store one order; its id. Retried with the same Idempotency-Key."""
        path, kwargs = self._submit_request(order, task_type, idempotency_key or new_key())
        response = self._send("POST", path, **kwargs)
        _raise_for(response)
        return str(response.json()["order_id"])

    def submit_batch(
        self,
        orders: Sequence[Mapping[str, Any]],
        idempotency_keys: Sequence[str | None] | None = None,
        task_type: str | None = None,
    ) -> BatchResult:
        """POST /orders/batch: each item's result in the orders' order. Only a batch whose items
        all carry keys is safe to retry; one without is sent once (no retry on 503)."""
        path, kwargs = self._batch_request(orders, idempotency_keys, task_type)
        keyed = idempotency_keys is not None and all(idempotency_keys)
        if keyed:
            response = self._send("POST", path, **kwargs)
        else:
            response = self._http.request("POST", path, headers=self._headers, **kwargs)
        _raise_for(response)
        result: BatchResult = response.json()
        return result

    def get(self, order_id: str) -> dict[str, Any]:
        """The order's view (GET /orders/{id}); OrderflowError(404) if there is none."""
        response = self._send("GET", f"/orders/{order_id}")
        _raise_for(response)
        view: dict[str, Any] = response.json()
        return view

    def wait(self, order_id: str, timeout_s: float = 60.0, poll_s: float = 0.2) -> dict[str, Any]:
        """The order's view once its status is final. Asks with `?wait=` (the ingest holds the
        request until the order is final, where it supports it) and polls with backoff otherwise."""
        deadline = time.monotonic() + timeout_s
        view: dict[str, Any] | None = None
        pause_s = poll_s
        while True:
            response = self._send("GET", f"/orders/{order_id}", **self._wait_args(deadline))
            _raise_for(response)  # 404 at once: a stored order is found from its first moment
            view = response.json()
            if view.get("status") in FINAL_STATUSES:
                return view
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(order_id, view)
            time.sleep(min(pause_s, left))
            pause_s = min(pause_s * 2, 2.0)


class AsyncClient(_Base):
    """The asyncio client: the same methods, awaited; `async with AsyncClient(...) as c:`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry, timeout_s)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except (httpx.TimeoutException, httpx.TransportError):
                if last:
                    raise
                await asyncio.sleep(self.retry.delay_s(attempt, None))
                continue
            if last or not self.retry.retried(response.status_code):
                return response
            await asyncio.sleep(self.retry.delay_s(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable")  # pragma: no cover

    async def submit(
        self, order: Mapping[str, Any], task_type: str | None = None, idempotency_key: str | None = None
    ) -> str:
        path, kwargs = self._submit_request(order, task_type, idempotency_key or new_key())
        response = await self._send("POST", path, **kwargs)
        _raise_for(response)
        return str(response.json()["order_id"])

    async def submit_batch(
        self,
        orders: Sequence[Mapping[str, Any]],
        idempotency_keys: Sequence[str | None] | None = None,
        task_type: str | None = None,
    ) -> BatchResult:
        path, kwargs = self._batch_request(orders, idempotency_keys, task_type)
        keyed = idempotency_keys is not None and all(idempotency_keys)
        if keyed:
            response = await self._send("POST", path, **kwargs)
        else:
            response = await self._http.request("POST", path, headers=self._headers, **kwargs)
        _raise_for(response)
        result: BatchResult = response.json()
        return result

    async def get(self, order_id: str) -> dict[str, Any]:
        response = await self._send("GET", f"/orders/{order_id}")
        _raise_for(response)
        view: dict[str, Any] = response.json()
        return view

    async def wait(self, order_id: str, timeout_s: float = 60.0, poll_s: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        view: dict[str, Any] | None = None
        pause_s = poll_s
        while True:
            response = await self._send("GET", f"/orders/{order_id}", **self._wait_args(deadline))
            _raise_for(response)
            view = response.json()
            if view.get("status") in FINAL_STATUSES:
                return view
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(order_id, view)
            await asyncio.sleep(min(pause_s, left))
            pause_s = min(pause_s * 2, 2.0)
