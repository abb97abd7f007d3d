"""`orderflow recent [--status S] [--type T] [--since TIME] [--until TIME]`: the console's Recent
orders on the command line. The same bounded read (orderflow_tools/console/recent.py): the newest
500 run events (of the range), their orders by latest event, 50 a page; `--page N` and `--before
SEQ` (the older events of a longer range) as the console's links."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable
from typing import Any

from orderflow.config import Settings
from orderflow_tools.console import recent
from orderflow_tools.natsconn import Session, session


def add_parser(sub: Any, settings: Callable[[argparse.Namespace], Settings]) -> None:
    p = sub.add_parser("recent", help="orders by their latest run event: by status, type and time, paged")
    p.add_argument("--status", default="", help=f"one of {', '.join(recent.STATUSES)}")
    p.add_argument("--type", dest="task_type", default="", help="a task type")
    p.add_argument("--since", default="", help="ISO 8601 time, UTC unless it says (2026-12-06T04:00:00Z)")
    p.add_argument("--until", default="", help="ISO 8601 time, excluded (default now)")
    p.add_argument("--page", default="0", help=f"page of {recent.PAGE} orders (default 0)")
    p.add_argument("--before", default="", help="the older events of the range: the sequence printed")
    p.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    p.set_defaults(func=lambda a: _cmd(settings(a), a))


def _cmd(settings: Settings, a: argparse.Namespace) -> int:
    params = {"status": a.status, "type": a.task_type, "since": a.since, "until": a.until, "page": a.page}
    try:  # checked before connecting: a bad range fails at once
        q = recent.parse_query({**params, "before": a.before})
    except recent.QueryError as exc:
        print(f"orderflow recent: {exc}", file=sys.stderr)
        return 2

    async def run() -> int:
        async with session(settings) as s:
            return await show(s, q)

    return asyncio.run(run())


async def show(s: Session, q: recent.Query) -> int:
    view = await recent.runs_between(s, q.range)
    rows, more = recent.orders(view.records, q.status, q.task_type, q.page)
    for o in rows:
        at = dt.datetime.fromtimestamp(o.at, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        print(f"{o.order_id}  {o.task_type:<12} {o.status:<11} {at}  {o.worker}")
    if not rows:
        print("no orders", file=sys.stderr)
    if more:
        print(f"more: --page {q.page + 1}", file=sys.stderr)
    if view.older is not None:
        print(f"older run events in the range: --before {view.older}", file=sys.stderr)
    return 0
