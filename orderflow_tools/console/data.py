"""What the console shows and does, read from NATS in bounded steps: no page scans everything.

Overview: each ORDERS consumer (backlog = undelivered, running = un-acked, its pause) and the
workers in KV ORDER_WORKERS (oldest first: the pull priority order, so the last is the one a
scale-down takes first). An order: its record (orderflow.lookup) and its runs in ORDER_RUNS (at
most MAX_RUNS, by subject). Dead letters: the first MAX_DEAD of ORDERS_DLQ (orderflow_tools/dlq.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from orderflow import consumers, contract
from orderflow.config import Settings
from orderflow_tools import dlq, pauses
from orderflow_tools.natsconn import Session

MAX_RUNS = 100
MAX_DEAD = 50
MAX_WORKERS = 200
RECENT_RUNS = 500  # the long-jobs page reads the last this many run events, no more
MAX_LONG = 50
MAX_PROGRESS_CHARS = 120
WORKERS_EVERY_S = 2.0


@dataclass(frozen=True)
class TypeRow:
    task_type: str
    consumer: str
    backlog: int
    running: int
    paused: bool
    reason: str
    by: str
    since: str


@dataclass(frozen=True)
class WorkerRow:
    pod: str
    age_s: float
    priority_rank: int  # 0 = the oldest: pulls first, a scale-down takes it last
    # What the worker wrote at its last refresh; None where its record predates these fields.
    slots_busy: int | None = None
    slots_total: int | None = None
    draining: bool | None = None
    deletion_cost: int | None = None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def worker_row(pod: str, age_s: float, rank: int, record: dict[str, Any]) -> WorkerRow:
    """One worker's row from its ORDER_WORKERS record; fields it lacks (an older worker) stay None."""
    draining = record.get("draining")
    return WorkerRow(
        pod,
        age_s,
        rank,
        _int_or_none(record.get("slots_busy")),
        _int_or_none(record.get("slots_total")),
        draining if isinstance(draining, bool) else None,
        _int_or_none(record.get("deletion_cost")),
    )


async def overview(s: Session, settings: Settings, cache: WorkersCache | None = None) -> dict[str, Any]:
    infos = await pauses.listing(s)  # one listing for the counts and the pauses
    states = await pauses.states(s, settings, infos)
    types = []
    for c in (consumers.ConsumerConflict.of(info) for info in infos):
        p = states.get(c.name)
        types.append(
            TypeRow(
                pauses.type_of(c.name, settings),
                c.name,
                c.pending,
                c.ack_pending,
                bool(p and p.paused),
                p.reason if p else "",
                p.by if p else "",
                p.since if p else "",
            )
        )
    return {
        "types": [asdict(t) for t in types],
        "workers": [asdict(w) for w in await (cache.rows(s) if cache else workers(s))],
        "at": time.time(),
    }


Started = list[tuple[float, str, dict[str, Any]]]  # (started_at, pod, record), oldest first


async def workers(s: Session) -> list[WorkerRow]:
    return rows_of(await worker_records(s), time.time())


async def worker_records(s: Session) -> Started:
    from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError

    try:
        kv = await s.js.key_value(contract.WORKERS_BUCKET)
        keys = (await kv.keys())[:MAX_WORKERS]
    except (BucketNotFoundError, NoKeysError):
        return []
    started: Started = []
    for key in keys:
        with contextlib.suppress(KeyNotFoundError, ValueError, KeyError, TypeError):
            entry = await kv.get(key)
            record = json.loads(entry.value or b"{}")
            started.append((float(record["started_at"]), key, record))
    return sorted(started, key=lambda s: (s[0], s[1]))


def rows_of(started: Started, now: float) -> list[WorkerRow]:
    return [worker_row(pod, max(0.0, now - at), rank, rec) for rank, (at, pod, rec) in enumerate(started)]


class WorkersCache:
    """The workers' records read at most every `every_s` for the live overview: each worker writes
    its own only every 2 s (worker/timing.py rank_refresh_s), and a listing of the bucket's keys is
    a consumer made and deleted on the server. The ages are computed afresh at every update."""

    def __init__(self, every_s: float = WORKERS_EVERY_S) -> None:
        self.every_s = every_s
        self.read_at = -every_s
        self.started: Started = []

    async def rows(self, s: Session) -> list[WorkerRow]:
        if time.monotonic() - self.read_at >= self.every_s:
            self.started, self.read_at = await worker_records(s), time.monotonic()
        return rows_of(self.started, time.time())


async def order(s: Session, order_id: str) -> tuple[dict[str, Any] | None, list[contract.RunRecord]]:
    from orderflow.lookup import OrderLookup, render

    record = await OrderLookup(s.requests).find(order_id)
    if record is None:
        return None, []
    return render(record), await runs(s, order_id)


async def runs(s: Session, order_id: str) -> list[contract.RunRecord]:
    from nats.js.errors import NotFoundError

    out: list[contract.RunRecord] = []
    seq = 1
    subject = contract.RUNS_PREFIX + order_id
    while len(out) < MAX_RUNS:
        try:
            msg = await s.js.get_msg(contract.RUNS_STREAM, seq, subject=subject, next=True)
        except NotFoundError:
            break
        assert msg.seq is not None
        out.append(contract.decode_run(msg.data or b"{}"))
        seq = msg.seq + 1
    return out


async def dead_letters(s: Session, task_type: str | None = None) -> list[dlq.Dead]:
    out: list[dlq.Dead] = []
    async with contextlib.aclosing(dlq.scan(s, dlq.Filters(task_type, None, None))) as found:
        async for dead in found:
            out.append(dead)
            if len(out) >= MAX_DEAD:
                break
    return out


async def replay(s: Session, order_id: str) -> bool:
    """As `orderflow dlq replay ID`: republish, and remove the dead letter only after the PubAck."""
    dead = await dlq.find(s, order_id)
    if dead is None:
        return False
    await s.js.publish(
        contract.order_subject(dead.task_type, dead.order_id), dead.data, headers=dlq.replay_headers(dead)
    )
    await s.js.delete_msg(contract.DLQ_STREAM, dead.seq)
    return True


async def discard(s: Session, order_id: str) -> bool:
    """As `orderflow dlq discard ID --yes`: the dead letter is gone for good (its status stays `dead`)."""
    from orderflow_tools.dlqdiscard import discard_one

    return await discard_one(s, order_id)


@dataclass(frozen=True)
class LongJob:
    order_id: str
    task_type: str
    worker: str
    running_s: float  # since this run started
    checkpoint_age_s: float | None  # since its last checkpoint; None: none yet
    at_risk_s: float  # the work a kill would lose now: since the last checkpoint, else since the start
    progress: str = ""  # the last checkpoint's state as the job wrote it; "" none yet


def progress_of(checkpoint: Any) -> str:
    """A checkpoint's state, compact JSON cut at MAX_PROGRESS_CHARS: the job's progress in its own
    words (orderflow cannot know what a handler's state means)."""
    if checkpoint in (None, "", {}):
        return ""
    text = json.dumps(checkpoint, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= MAX_PROGRESS_CHARS else text[: MAX_PROGRESS_CHARS - 1] + "…"


async def long_jobs(s: Session) -> list[LongJob]:
    """Orders whose latest event among the last RECENT_RUNS of ORDER_RUNS is a start (so still
    running), longest first, with their status records: bounded, never a scan of every status."""
    from nats.js.errors import NotFoundError

    from orderflow.lookup import OrderLookup

    try:
        last = (await s.js.stream_info(contract.RUNS_STREAM)).state.last_seq or 0
    except NotFoundError:
        return []
    latest: dict[str, str] = {}
    seq = max(1, last - RECENT_RUNS + 1)
    while seq <= last:
        try:
            msg = await s.js.get_msg(contract.RUNS_STREAM, seq, next=True)
        except NotFoundError:
            break
        assert msg.seq is not None
        rec = contract.decode_run(msg.data or b"{}")
        latest[rec.order_id] = rec.event
        seq = msg.seq + 1
    now = time.time()
    out: list[LongJob] = []
    lookup = OrderLookup(s.requests)
    for order_id in [o for o, event in latest.items() if event == "start"][-MAX_LONG:]:
        record = await lookup.status_record(order_id)
        if not record or record.get("status") != "processing":
            continue
        started = float(record.get("started_at") or now)
        checkpoint_at = record.get("checkpoint_at")
        age = None if checkpoint_at is None else max(0.0, now - float(checkpoint_at))
        out.append(
            LongJob(
                order_id,
                str(record.get("task_type") or "-"),
                str(record.get("worker_id") or "-"),
                max(0.0, now - started),
                age,
                age if age is not None else max(0.0, now - started),
                progress_of(record.get("checkpoint")),
            )
        )
    return sorted(out, key=lambda j: -j.running_s)
