"""`orderflow status [ID] [--watch | --timeline | --png FILE]` and `orderflow cancel ID [--force]`.

An order's status comes from orderflow.lookup (its KV record, else its message in ORDERS means
queued), shown with ISO 8601 UTC timestamps (and the numbers as `<name>_s`).

Cancel, in this order (a first delivery of a generated id does not read its status, so the marker
must be there before anything else): 1. the marker in KV ORDER_CANCELS (confirmed), which every
worker watches; 2. ask the running workers on orderflow.control.cancel: the one running it stops
it, records `cancelled` and terms the message; 3. nobody runs it: record `cancelled` (a compare and
set: a final status written meanwhile wins). An id JetStream does not know is refused, unless
`--force` (a pre-cancel: an order later created with that id, `key-<key>` for an Idempotency-Key,
never runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from orderflow.config import Settings
from orderflow_tools.natsconn import Session, session

WATCH_INTERVAL_S = 0.5


def add_parsers(sub: Any, settings: Callable[[argparse.Namespace], Settings]) -> None:
    st = sub.add_parser("status", help="queue overview, or one order's status (--watch: until final)")
    st.add_argument("order_id", nargs="?")
    st.add_argument("--watch", action="store_true", help="follow the order until it is final")
    st.add_argument("--timeline", action="store_true", help="draw the order's runs as a text timeline")
    st.add_argument("--png", metavar="FILE", help="draw the order's runs as a picture (PNG) in FILE")
    st.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    st.set_defaults(func=lambda a: asyncio.run(status(settings(a), a.order_id, a.watch, a.timeline, a.png)))
    ca = sub.add_parser("cancel", help="stop one order wherever it runs, or keep it from running")
    ca.add_argument("order_id")
    ca.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    ca.add_argument("--timeout-s", type=float, default=2.0, help="how long to wait for the worker's answer")
    ca.add_argument(
        "--force",
        action="store_true",
        help="cancel an id that does not exist (yet): an order later created with it will not run",
    )
    ca.set_defaults(func=lambda a: asyncio.run(cancel(settings(a), a.order_id, a.timeout_s, a.force)))


async def status(
    settings: Settings,
    order_id: str | None,
    watch: bool = False,
    timeline: bool = False,
    png: str | None = None,
) -> int:
    if (timeline or png) and (order_id is None or watch):
        print("--timeline and --png need an order id and no --watch", file=sys.stderr)
        return 2
    async with session(settings) as s:
        if order_id is None:
            return await _overview(s, settings)
        if watch:
            return await _watch(s, order_id)
        from orderflow.lookup import OrderLookup, render

        record = await OrderLookup(s.requests).find(order_id)
        if record is None:
            print(f"order {order_id}: not found (no status record, no message in ORDERS)", file=sys.stderr)
            return 1
        if not (timeline or png):
            print(json.dumps(render(record), indent=2))
            return 0
        return await _draw(s, order_id, timeline, png)


async def _draw(s: Session, order_id: str, timeline: bool, png: str | None) -> int:
    from orderflow_tools import timeline as tl
    from orderflow_tools.console.data import runs as read_runs

    runs = tl.runs_of(await read_runs(s, order_id))
    if timeline or not png:
        print(tl.text(order_id, runs))
    if png:
        if not runs:
            print(f"order {order_id}: no runs recorded in ORDER_RUNS; no picture", file=sys.stderr)
            return 1
        tl.png(order_id, runs, png)
        print(f"wrote {png}")
    return 0


async def _overview(s: Session, settings: Settings) -> int:
    from nats.js.errors import NotFoundError

    from orderflow import consumers, contract
    from orderflow_tools import pauses

    for name in (contract.STREAM, contract.DLQ_STREAM):
        try:
            info = await s.js.stream_info(name)
            print(f"stream {name:<11} messages {info.state.messages:>8}")
        except NotFoundError:
            print(f"stream {name:<11} (missing)")
    paused = await pauses.states(s, settings)
    for c in await consumers.list_consumers(s.nc):
        p = paused.get(c.name)
        note = (
            f"  PAUSED by {p.by or '?'} since {p.since or '?'}: {p.reason or '(no reason recorded)'}"
            if p and p.paused
            else ""
        )
        print(
            f"consumer {c.name:<15} pending {c.pending:>8}  ack-pending {c.ack_pending:>6}"
            f"  waiting pulls {c.waiting:>3}  filters {', '.join(c.filters)}{note}"
        )
    return 0


def _line(record: dict[str, Any]) -> str:
    parts = [
        str(record.get("updated_at", "-")),
        f"{record.get('status', '?'):<10}",
        f"attempts {record.get('attempts', 0)}",
        f"deliveries {record.get('deliveries', 0)}",
    ]
    if record.get("worker_id"):
        parts.append(f"on {record['worker_id']}")
    if record.get("error"):
        parts.append(f"({record['error']})")
    return "  ".join(parts)


async def _watch(s: Session, order_id: str) -> int:
    """One line per change until the order is final; then the whole record. Exit 0 once done, 1
    if it ends failed, dead or cancelled, or is not found."""
    from orderflow import contract
    from orderflow.lookup import OrderLookup, render

    lookup = OrderLookup(s.requests)
    last: tuple[Any, ...] | None = None
    while True:
        record = await lookup.find(order_id)
        if record is None:
            print(f"order {order_id}: not found (no status record, no message in ORDERS)", file=sys.stderr)
            return 1
        shown = render(record)
        key = tuple(
            shown.get(k) for k in ("status", "attempts", "deliveries", "worker_id", "error", "updated_at")
        )
        if key != last:
            print(_line(shown), flush=True)
            last = key
        if record.get("status") in contract.FINAL_STATUSES:
            print(json.dumps(shown, indent=2))
            return 0 if record["status"] == "done" else 1
        await asyncio.sleep(WATCH_INTERVAL_S)


async def cancel(settings: Settings, order_id: str, timeout_s: float, force: bool = False) -> int:
    import nats.errors
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

    from orderflow import contract
    from orderflow.lookup import OrderLookup

    async with session(settings) as s:
        if not contract.valid_order_id(order_id):
            print(f"{order_id!r} is not an order id", file=sys.stderr)
            return 2
        found = await OrderLookup(s.requests).find(order_id)
        if found is not None and found.get("status") in contract.FINAL_STATUSES:
            print(f"order {order_id} is already {found['status']}; nothing to cancel", file=sys.stderr)
            return 1
        if found is None and not force:
            print(
                f"order {order_id}: not found (no status record, no message in ORDERS); nothing to "
                "cancel. --force cancels it in advance: an order later created with this id "
                "(key-<key> for an Idempotency-Key) will not run",
                file=sys.stderr,
            )
            return 1
        try:
            markers = await s.js.key_value(contract.CANCELS_BUCKET)
            statuses = await s.js.key_value(contract.STATUS_BUCKET)
        except BucketNotFoundError:
            print(
                f"NATS at {s.url} has no orderflow buckets: start an ingest or a worker there first",
                file=sys.stderr,
            )
            return 1
        # 1. The marker, confirmed: from now on no worker starts the order.
        await markers.put(order_id, json.dumps({"at": time.time(), "by": "orderflow cancel"}).encode())
        # 2. A worker running it stops it and records `cancelled` itself.
        try:
            reply = await s.nc.request(contract.CONTROL_CANCEL, order_id.encode(), timeout=timeout_s)
            print(f"order {order_id}: {reply.data.decode()}")
            return 0
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            pass
        # 3. Not running anywhere: record it, unless a final status came meanwhile.
        for _ in range(5):
            try:
                entry = await statuses.get(order_id)
                current = contract.decode_status(entry.value or b"{}")
                revision = entry.revision
            except KeyNotFoundError:
                current, revision = None, None
            if current is not None and current.status in contract.FINAL_STATUSES:
                print(f"order {order_id}: {current.status} meanwhile; nothing left to cancel")
                return 0 if current.status == "cancelled" else 1
            record = contract.StatusRecord(
                order_id,
                "cancelled",
                current.attempts if current else 0,
                time.time(),
                task_type=(current.task_type if current else None) or (found or {}).get("task_type"),
                error="cancelled before it ran",
                deliveries=current.deliveries if current else 0,
                handbacks=current.handbacks if current else 0,
                crashes=current.crashes if current else 0,
                client=(current.client if current else None) or (found or {}).get("client"),
                error_class="cancelled",
            )
            try:
                if revision is None:
                    await statuses.create(order_id, contract.encode(record))
                else:
                    await statuses.update(order_id, contract.encode(record), last=revision)
            except KeyWrongLastSequenceError:
                continue  # written meanwhile: look again
            what = "not running" if found is not None else "not found; cancelled in advance"
            print(f"order {order_id}: {what}; marked cancelled, it will not run")
            return 0
        print(f"order {order_id}: its status keeps changing; try again", file=sys.stderr)
        return 1
