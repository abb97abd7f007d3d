"""Waiting on an order without polling (README, The API): `GET /orders/{id}?wait=S` answers once the
order is final or S seconds (at most 60) have passed; `GET /orders/{id}/events` streams each status
change as Server-Sent Events and ends at the final one. Both are driven by the process's one KV
watch (ingest/watch.py), bounded by ORDERFLOW_MAX_WAITERS (503 + Retry-After past it) and end
cleanly on SIGTERM: a wait answers with what it knows, a stream ends (ingest/server.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from ingest import responses
from ingest.watch import Full, StatusWatch
from orderflow import contract

MAX_WAIT_S = 60.0
# A comment line this often keeps proxies from closing a quiet stream, and finds a gone client.
KEEPALIVE_S = 15.0
FINAL = contract.FINAL_STATUSES
BAD_WAIT = contract.FieldError("wait", f"must be a number of seconds from 0 to {MAX_WAIT_S:g}")
_SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def wait_of(values: list[str]) -> float | None:
    """?wait's seconds, or None when it is not a number in 0..60 (one value only)."""
    if len(values) != 1:
        return None
    try:
        seconds = float(values[0])
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= MAX_WAIT_S else None


def busy(retry_after_s: int) -> Response:
    """Past the cap on waiters: the client may retry, or poll."""
    return Response(
        responses.TOO_MANY_WAITERS,
        503,
        headers={"Retry-After": str(retry_after_s)},
        media_type="application/json",
    )


async def until_final(
    waiter_updates: asyncio.Queue[dict[str, Any] | None], record: dict[str, Any], wait_s: float
) -> dict[str, Any]:
    """The order's record once it is final, or the latest when `wait_s` runs out or the process
    shuts down (None in the queue)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while record.get("status") not in FINAL:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            update = await asyncio.wait_for(waiter_updates.get(), remaining)
        except TimeoutError:
            break
        if update is None:
            break
        record = update
    return record


def event(seq: int, view: dict[str, Any]) -> bytes:
    return b"event: status\nid: %d\ndata: " % seq + contract.encode(view) + b"\n\n"


async def stream(
    watch: StatusWatch, order_id: str, find: Any, show: Any, first: dict[str, Any]
) -> AsyncIterator[bytes]:
    """The order's status as it changes: its current record first, then each record whose status
    differs from the last one sent (a lease refresh is not a change), until a final one."""
    try:
        with watch.register(order_id) as waiter:
            # Registered before this read: nothing written after it is missed.
            try:
                record = await find(order_id) or first
            except Exception:  # NATS trouble: go on from what the route read
                record = first
            seq = 1
            yield event(seq, show(record))
            last = record.get("status")
            while last not in FINAL:
                try:
                    update = await asyncio.wait_for(waiter.updates.get(), KEEPALIVE_S)
                except TimeoutError:
                    # quiet for a while: look at the store too, in case the watch missed a write
                    # (its consumer re-created after a reconnect); else keep the stream alive
                    try:
                        update = await find(order_id)
                    except Exception:
                        update = None
                    if update is None or update.get("status") == last:
                        yield b": keepalive\n\n"
                        continue
                if update is None:  # shutting down: the stream ends, the client may reconnect
                    return
                if update.get("status") != last:
                    last = update.get("status")
                    seq += 1
                    yield event(seq, show(update))
    except Full:  # the cap was reached between the route's check and here
        yield event(1, show(first))


def sse(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=_SSE_HEADERS)
