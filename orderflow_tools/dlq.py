"""`orderflow dlq list | show ID | replay`: the dead-letter queue, operable (Sidekiq's dead set and
Hatchet's bulk replay are the models).

A dead order is a message in ORDERS_DLQ on `dlq.orders.<type>.<order_id>`: the original payload
and headers plus Orderflow-Reason (attempts, crashes, deliveries, poison, undecodable or payload: a
poison or undecodable order, or one whose payload no longer fits its type's, is copied here too, so
it can be replayed once its handler or release is fixed),
Orderflow-Error, Orderflow-Attempts (failed attempts), Orderflow-Deliveries, Orderflow-Crashes,
Orderflow-Handbacks, Orderflow-Order-Id, Orderflow-Subject and Orderflow-Worker (worker/outcome.py).
Filters: `--type`, `--since` (a duration back from now, 90m, 2h, 3d, or an ISO 8601 time),
`--error-contains` (case-insensitive); `replay` also takes order ids, or `--all`.

`replay` republishes each to `orders.<type>.<order_id>` (the order keeps its id, so the done-dedupe
still protects an order that was done meanwhile) without the dead-letter bookkeeping, with
Orderflow-Replay: 1 (the worker runs it again with fresh counts although its status is dead or
failed; once: a replay that fails again counts its attempts, backs off and is dead-lettered after
ORDERFLOW_MAX_DELIVER like any order) and
Orderflow-Status-Check: 1 (the worker reads that status first), and with Nats-Msg-Id
`<id>.replay.<dlq seq>` (a replay repeated after a crash is a duplicate inside the window). The
DLQ entry is removed only after JetStream acknowledged the republish; a failure stops the replay
there and leaves the rest where it was.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import re
import sys
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from orderflow import contract
from orderflow.config import Settings
from orderflow_tools.commands import command
from orderflow_tools.natsconn import Session, session

FETCH_BATCH = 256
PROGRESS_EVERY_S = 1.0  # a progress line at least this often on a long replay,
PROGRESS_EVERY_N = 1000  # and every this many orders
_SINCE = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str) -> float:
    """`90m`, `2h`, `3d`, `1h30m` back from now, or an ISO 8601 time -> epoch seconds."""
    parts = _SINCE.findall(text.strip())
    if parts and "".join(n + u for n, u in parts) == text.strip():
        return time.time() - sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration or a time: {text!r} (e.g. 90m, 2h, 3d, 2026-05-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Dead:
    seq: int
    subject: str
    at: float  # when it was dead-lettered (epoch s)
    headers: dict[str, str]
    data: bytes

    @property
    def task_type(self) -> str:
        return self.subject.split(".")[2] if self.subject.count(".") >= 3 else "?"

    @property
    def order_id(self) -> str:
        tail = self.subject.split(".", 3)[3] if self.subject.count(".") >= 3 else ""
        return self.headers.get(contract.H_ORDER_ID) or tail

    @property
    def error(self) -> str:
        return self.headers.get(contract.H_ERROR, "")

    @property
    def reason(self) -> str:
        """Why it is here (contract.DLQ_REASONS); `-` for a dead letter older than the header."""
        return self.headers.get(contract.H_REASON, "-")

    def header(self, name: str, default: str = "-") -> str:
        return self.headers.get(name, default)


@dataclass(frozen=True)
class Filters:
    task_type: str | None = None
    since: float | None = None
    error_contains: str | None = None

    def subject(self) -> str:
        return f"{contract.DLQ_PREFIX}{self.task_type}.>" if self.task_type else contract.DLQ_SUBJECTS[0]

    def match(self, dead: Dead) -> bool:
        if self.error_contains and self.error_contains.lower() not in dead.error.lower():
            return False
        return self.since is None or dead.at >= self.since

    @property
    def any(self) -> bool:
        return bool(self.task_type or self.since is not None or self.error_contains)


def _iso(epoch_s: float) -> str:
    from orderflow.lookup import iso

    return iso(epoch_s)


def add_parser(sub: Any, settings: Callable[[argparse.Namespace], Settings]) -> None:
    p = command(sub, "dlq", "the dead-letter queue: list, show, replay, discard", __doc__)
    actions = p.add_subparsers(dest="action", required=True)

    def filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--type", dest="task_type", help="only this task type")
        q.add_argument(
            "--since", type=parse_since, help="dead-lettered since: 90m, 2h, 3d or an ISO 8601 time"
        )
        q.add_argument("--error-contains", help="only those whose error contains this (any case)")
        q.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")

    ls = actions.add_parser("list", help="the dead orders, oldest first")
    filters(ls)
    ls.set_defaults(func=lambda a: asyncio.run(list_dead(settings(a), _filters(a))))
    sh = actions.add_parser("show", help="one dead order: payload, headers, error, attempts")
    sh.add_argument("order_id")
    sh.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    sh.set_defaults(func=lambda a: asyncio.run(show(settings(a), a.order_id)))
    rp = actions.add_parser("replay", help="run dead orders again with fresh counts (ids, filters or --all)")
    rp.add_argument(
        "order_ids", nargs="*", metavar="ID", help="these orders (default: what the filters select)"
    )
    filters(rp)
    rp.add_argument(
        "--all", action="store_true", help="every dead order (needed when no id or filter is given)"
    )
    rp.add_argument("--dry-run", action="store_true", help="say what would be replayed, change nothing")
    rp.set_defaults(
        func=lambda a: asyncio.run(
            replay(settings(a), a.order_ids, _filters(a), every=a.all, dry_run=a.dry_run)
        )
    )
    dc = actions.add_parser(
        "discard", help="remove dead letters for good (--yes): they can no longer be replayed"
    )
    dc.add_argument("order_ids", nargs="+", metavar="ID")
    dc.add_argument("--yes", action="store_true", help="really: a discard cannot be undone")
    dc.add_argument("--nats-url", help="overrides ORDERFLOW_NATS_URL")
    dc.set_defaults(func=lambda a: asyncio.run(_discard(settings(a), a.order_ids, a.yes)))


async def _discard(settings: Settings, order_ids: list[str], yes: bool) -> int:
    from orderflow_tools.dlqdiscard import discard

    return await discard(settings, order_ids, yes)


def _filters(a: argparse.Namespace) -> Filters:
    return Filters(a.task_type, a.since, a.error_contains)


def _dead_of(msg: Any) -> Dead:
    headers = {k: v for k, v in (msg.headers or {}).items()}
    return Dead(
        msg.metadata.sequence.stream, msg.subject, msg.metadata.timestamp.timestamp(), headers, msg.data
    )


async def scan(s: Session, filters: Filters) -> AsyncGenerator[Dead, None]:
    """Every dead order the filters select, oldest first (an ephemeral consumer; ends at the entry
    that was last when the scan began)."""
    from nats.js import api
    from nats.js.errors import NotFoundError

    try:
        info = await s.js.stream_info(contract.DLQ_STREAM)
    except NotFoundError:
        return
    if info.state.messages == 0:
        return
    config = api.ConsumerConfig(
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=api.DeliverPolicy.BY_START_TIME if filters.since else api.DeliverPolicy.ALL,
        opt_start_time=dt.datetime.fromtimestamp(filters.since, dt.UTC) if filters.since else None,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
    )
    sub = await s.js.pull_subscribe(filters.subject(), stream=contract.DLQ_STREAM, config=config)
    try:
        while True:
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=1.0)
            except TimeoutError:
                # nats-py raises its own TimeoutError or, when the server is slow to answer, the bare
                # one; either means no message within the second, not that none is left: the
                # consumer's count says whether any still match the filter
                if (await sub.consumer_info()).num_pending == 0:
                    return
                continue
            for msg in msgs:
                dead = _dead_of(msg)
                if dead.seq > info.state.last_seq:
                    return
                if filters.match(dead):
                    yield dead
                if msg.metadata.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(Exception):  # ephemeral: the server drops it after 30 s anyway
            await sub.unsubscribe()


async def find(s: Session, order_id: str) -> Dead | None:
    """The order's latest dead letter (an order may have died more than once)."""
    from nats.js.errors import NotFoundError

    try:
        msg = await s.js.get_last_msg(contract.DLQ_STREAM, f"{contract.DLQ_PREFIX}*.{order_id}")
    except NotFoundError:
        return None
    assert msg.seq is not None and msg.subject is not None
    at = msg.time.timestamp() if msg.time is not None else 0.0
    return Dead(msg.seq, msg.subject, at, dict(msg.headers or {}), msg.data or b"")


def _row(d: Dead) -> str:
    error = d.error if len(d.error) <= 70 else d.error[:67] + "..."
    return (
        f"{d.seq:>7}  {_iso(d.at)}  {d.task_type:<10} {d.order_id:<34} {d.reason:<11} "
        f"attempts {d.header(contract.H_ATTEMPTS):>2}  crashes {d.header(contract.H_CRASHES):>2}  {error}"
    )


async def list_dead(settings: Settings, filters: Filters) -> int:
    async with session(settings) as s:
        n = 0
        async with contextlib.aclosing(scan(s, filters)) as dead_orders:
            async for dead in dead_orders:
                if n == 0:
                    print(
                        f"{'seq':>7}  {'dead-lettered at':<24}  {'type':<10} {'order id':<34} {'reason':<11} "
                        "counts, error"
                    )
                print(_row(dead))
                n += 1
        what = "dead order" + ("" if n == 1 else "s")
        print(f"{n} {what}" + (" matching" if filters.any else "") + f" in {contract.DLQ_STREAM}")
        return 0


async def show(settings: Settings, order_id: str) -> int:
    async with session(settings) as s:
        dead = await find(s, order_id)
        if dead is None:
            print(f"order {order_id}: not in {contract.DLQ_STREAM}", file=sys.stderr)
            return 1
        print(f"order       {dead.order_id}")
        print(f"type        {dead.task_type}   ({dead.subject}, {contract.DLQ_STREAM} seq {dead.seq})")
        print(f"dead since  {_iso(dead.at)}   (last worker {dead.header(contract.H_WORKER)})")
        print(f"reason      {dead.reason}")
        print(f"error       {dead.error or '-'}")
        print(
            f"counts      failed attempts {dead.header(contract.H_ATTEMPTS)}, deliveries "
            f"{dead.header(contract.H_DELIVERIES)}, crashes {dead.header(contract.H_CRASHES)}, "
            f"hand-backs {dead.header(contract.H_HANDBACKS)}"
        )
        print("headers")
        for name, value in sorted(dead.headers.items()):
            print(f"  {name}: {value}")
        print("payload")
        try:
            print(json.dumps(json.loads(dead.data), indent=2))
        except ValueError:
            print(f"  (not JSON) {dead.data[:2000]!r}")
        return 0


_BOOKKEEPING = {
    "Orderflow-Error",
    "Orderflow-Reason",
    "Orderflow-Attempts",
    "Orderflow-Deliveries",
    "Orderflow-Failed-Attempts",
    "Orderflow-Crashes",
    "Orderflow-Handbacks",
    "Orderflow-Order-Id",
    "Orderflow-Subject",
    "Orderflow-Worker",
}


def replay_headers(dead: Dead) -> dict[str, str]:
    """The original headers without the dead-letter bookkeeping and JetStream's own (Nats-*), plus
    what makes the worker run it afresh."""
    headers = {
        k: v for k, v in dead.headers.items() if k not in _BOOKKEEPING and not k.lower().startswith("nats-")
    }
    headers[contract.H_REPLAY] = "1"
    headers[contract.H_STATUS_CHECK] = "1"
    headers[contract.H_MSG_ID] = f"{dead.order_id}.replay.{dead.seq}"
    return headers


async def replay(
    settings: Settings, order_ids: list[str], filters: Filters, *, every: bool = False, dry_run: bool = False
) -> int:
    if not (order_ids or filters.any or every):
        print(
            "orderflow dlq replay: name the orders (IDs), filter them (--type, --since, --error-contains) "
            "or pass --all for every dead order; --dry-run shows what would be replayed",
            file=sys.stderr,
        )
        return 2
    async with session(settings) as s:
        chosen: list[Dead] = []
        missing: list[str] = []
        if order_ids:
            for order_id in order_ids:
                dead = await find(s, order_id)
                if dead is None or not filters.match(dead):
                    missing.append(order_id)
                else:
                    chosen.append(dead)
        else:
            async with contextlib.aclosing(scan(s, filters)) as dead_orders:
                chosen = [d async for d in dead_orders]
        for order_id in missing:
            print(
                f"order {order_id}: not in {contract.DLQ_STREAM} (or not matching the filters)",
                file=sys.stderr,
            )
        if dry_run:
            for dead in chosen:
                print(f"would replay {_row(dead)}")
            print(f"{len(chosen)} to replay (dry run: nothing changed)")
            return 1 if missing else 0
        done = 0
        last_report = time.monotonic()
        for dead in chosen:
            subject = contract.order_subject(dead.task_type, dead.order_id)
            try:
                await s.js.publish(subject, dead.data, headers=replay_headers(dead))
            except Exception as exc:
                print(
                    f"orderflow dlq replay: republishing {dead.order_id} to {subject} failed ({exc!r}); "
                    f"replayed {done} of {len(chosen)}, the rest stay in {contract.DLQ_STREAM}",
                    file=sys.stderr,
                )
                return 1
            # Only now, with the PubAck in hand: the order is in ORDERS again.
            await s.js.delete_msg(contract.DLQ_STREAM, dead.seq)
            done += 1
            if time.monotonic() - last_report >= PROGRESS_EVERY_S or done % PROGRESS_EVERY_N == 0:
                print(f"replayed {done}/{len(chosen)}", file=sys.stderr, flush=True)
                last_report = time.monotonic()
        print(
            f"replayed {done} order{'' if done == 1 else 's'} to ORDERS (removed from {contract.DLQ_STREAM})"
        )
        return 1 if missing else 0
