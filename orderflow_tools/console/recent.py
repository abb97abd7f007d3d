"""What the last RECENT_RUNS events of ORDER_RUNS say: done and failed rates per task type, and
the orders they name by status and type, paged. Bounded: one read of at most RECENT_RUNS messages,
never a scan of every order (a queued order that never ran is not in it: find it by id)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from orderflow import contract
from orderflow_tools.natsconn import Session

RECENT_RUNS = 500
PAGE = 50
# A run event's outcome as the list shows it: the latest event of an order says where it is.
STATUS_OF = {"start": "running", "done": "done", "error": "failed", "interrupted": "interrupted"}
STATUSES = tuple(STATUS_OF.values())


@dataclass(frozen=True)
class Rate:
    task_type: str
    done_per_s: float
    failed_per_s: float
    window_s: float  # the span of the events counted


@dataclass(frozen=True)
class RecentOrder:
    order_id: str
    task_type: str  # "?" for a record of an older worker, which did not write it
    status: str
    worker: str
    at: float


async def recent_runs(s: Session, limit: int = RECENT_RUNS) -> list[contract.RunRecord]:
    """The last `limit` run events, oldest first."""
    from nats.js.errors import NotFoundError

    try:
        last = (await s.js.stream_info(contract.RUNS_STREAM)).state.last_seq or 0
    except NotFoundError:
        return []
    out: list[contract.RunRecord] = []
    seq = max(1, last - limit + 1)
    while seq <= last and len(out) < limit:
        try:
            msg = await s.js.get_msg(contract.RUNS_STREAM, seq, next=True)
        except NotFoundError:
            break
        assert msg.seq is not None
        out.append(contract.decode_run(msg.data or b"{}"))
        seq = msg.seq + 1
    return out


def rates(records: list[contract.RunRecord], now: float | None = None) -> list[Rate]:
    """Done and failed (error) events per second per type, over the span from the oldest event
    counted to now (at least 1 s): with fewer events than RECENT_RUNS, that is all the stream holds."""
    if not records:
        return []
    window = max(1.0, (now or time.time()) - min(r.at for r in records))
    done = Counter(r.task_type or "?" for r in records if r.event == "done")
    failed = Counter(r.task_type or "?" for r in records if r.event == "error")
    types = sorted({r.task_type or "?" for r in records})
    return [Rate(t, done[t] / window, failed[t] / window, window) for t in types]


def orders(
    records: list[contract.RunRecord], status: str = "", task_type: str = "", page: int = 0
) -> tuple[list[RecentOrder], bool]:
    """The orders of these events, newest first, by their latest event; filtered; one PAGE of them
    and whether there is a next page."""
    latest: dict[str, contract.RunRecord] = {}
    for r in records:
        latest[r.order_id] = r
    rows = [
        RecentOrder(r.order_id, r.task_type or "?", STATUS_OF.get(r.event, r.event), r.worker_id, r.at)
        for r in sorted(latest.values(), key=lambda r: -r.at)
    ]
    rows = [
        o for o in rows if (not status or o.status == status) and (not task_type or o.task_type == task_type)
    ]
    start = max(0, page) * PAGE
    return rows[start : start + PAGE], len(rows) > start + PAGE
