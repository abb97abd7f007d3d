"""`orderflow consumers [list]` and `orderflow consumers delete NAME`.

ORDERS is a work-queue stream: no two of its consumers may take the same subject. Switching from
one task type (consumer `workers`, every order) to several (`workers-<type>`) leaves the old one
in the way, and a worker with the new ORDERFLOW_TASK_TYPES exits 2 naming it. `list` shows every
consumer with its work and whether it overlaps the consumers of this environment's
ORDERFLOW_TASK_TYPES; `delete` removes one, but only once it has no undelivered and no un-acked
messages (let workers with its old ORDERFLOW_TASK_TYPES finish them first): a worker still holding
its messages could not ack them any more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from orderflow.config import Settings
from orderflow_tools.commands import command
from orderflow_tools.natsconn import session


def add_parser(sub: Any, settings: Callable[[argparse.Namespace], Settings]) -> None:
    p = command(
        sub,
        "consumers",
        "list the ORDERS consumers, or delete one that is in the way (only when it holds no work)",
        __doc__,
    )
    p.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    p.set_defaults(func=lambda a: asyncio.run(list_consumers(settings(a))))
    actions = p.add_subparsers(dest="action")
    ls = actions.add_parser("list", help="every consumer on ORDERS, its filters and its work")
    ls.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    ls.set_defaults(func=lambda a: asyncio.run(list_consumers(settings(a))))
    rm = actions.add_parser("delete", help="delete a consumer with no undelivered and no un-acked messages")
    rm.add_argument("name")
    rm.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    rm.set_defaults(func=lambda a: asyncio.run(delete(settings(a), a.name)))


async def list_consumers(settings: Settings) -> int:
    from orderflow import consumers, contract

    async with session(settings) as s:
        listed = await consumers.list_consumers(s.nc)
        conflicts = {c.name for c in await consumers.conflicting_consumers(s.nc, settings)}
        if not listed:
            print(f"no consumers on {contract.STREAM} (no worker has run against {s.url})")
            return 0
        types = ",".join(t.name for t in settings.task_types)
        for c in listed:
            note = f"  overlaps ORDERFLOW_TASK_TYPES={types}" if c.name in conflicts else ""
            print(
                f"{c.name:<20} filters {', '.join(c.filters):<28} undelivered {c.pending:>7}  "
                f"un-acked {c.ack_pending:>5}  waiting pulls {c.waiting:>3}{note}"
            )
        return 0


async def delete(settings: Settings, name: str) -> int:
    from orderflow import broker, consumers

    async with session(settings) as s:
        try:
            gone = await consumers.delete_idle_consumer(s.nc, name)
        except broker.BrokerConfigError as exc:
            print(f"orderflow consumers delete: {exc}", file=sys.stderr)
            return 1
        except consumers.JetStreamApiError as exc:
            print(f"orderflow consumers delete: {name}: {exc}", file=sys.stderr)
            return 1
        print(f"deleted consumer {gone.name} (filters {', '.join(gone.filters)}); it held no work")
        return 0
