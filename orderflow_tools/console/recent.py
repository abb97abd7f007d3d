"""What the last RECENT_RUNS events of ORDER_RUNS say: done and failed rates per task type, and
the orders they name by status and type, paged. Bounded: one read of at most RECENT_RUNS messages,
never a scan of every order (a queued order that never ran is not in it: find it by id).

A time range (since, until) is found by the stream's own timestamps: one message get by start time
for each end gives its sequence, and the view reads the newest RECENT_RUNS events of the range; an
older part of a longer range is the next view (`before`, a sequence), never one big read."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from orderflow import contract
from orderflow_tools.natsconn import Session
from orderflow_tools.pauses import TYPE_RE

RECENT_RUNS = 500
PAGE = 50
# A run event's outcome as the list shows it: the latest event of an order says where it is.
STATUS_OF = {"start": "running", "done": "done", "error": "failed", "interrupted": "interrupted"}
STATUSES = tuple(STATUS_OF.values())
MAX_TIME_CHARS = 40
MAX_SEQ_DIGITS = 19  # a stream sequence is a uint64


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


class QueryError(ValueError):
    """A bad filter, page or range: str() is the 400's message."""


@dataclass(frozen=True)
class Range:
    since: float | None = None  # epoch seconds; None: from the oldest event kept
    until: float | None = None  # excluded; None: up to now
    before: int | None = None  # a later view of the same range: events before this sequence


@dataclass(frozen=True)
class Window:
    records: list[contract.RunRecord]  # oldest first
    older: int | None  # the range holds events before these: `before` of the next view


def parse_time(name: str, text: str) -> float | None:
    """An ISO 8601 time (UTC unless it says otherwise), as epoch seconds; "" is None."""
    if not text:
        return None
    try:
        if len(text) > MAX_TIME_CHARS:
            raise ValueError
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name} must be a time like 2026-12-06T04:00:00Z (UTC unless it says)") from None
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()


def parse_range(since: str = "", until: str = "", before: str = "") -> Range:
    r = Range(parse_time("since", since), parse_time("until", until))
    if r.since is not None and r.until is not None and r.until <= r.since:
        raise QueryError("until must be later than since")
    if before and not (before.isdigit() and len(before) <= MAX_SEQ_DIGITS):
        raise QueryError("before must be a stream sequence (a whole number)")
    return Range(r.since, r.until, int(before) if before else None)


@dataclass(frozen=True)
class Query:
    status: str
    task_type: str
    page: int
    range: Range
    filters: dict[str, str]  # status, type, since, until as asked: the next pages' links carry them


def parse_query(q: Mapping[str, str]) -> Query:
    """/recent's parameters, checked; QueryError names the bad one."""
    status, task_type, page = q.get("status", ""), q.get("type", ""), q.get("page", "0")
    if status and status not in STATUSES:
        raise QueryError(f"status must be one of {', '.join(STATUSES)}")
    if task_type and not TYPE_RE.match(task_type) and task_type != "?":
        raise QueryError("bad task type")
    if not page.isdigit() or int(page) > RECENT_RUNS // PAGE:
        raise QueryError("page must be a small whole number")
    since, until = q.get("since", ""), q.get("until", "")
    r = parse_range(since, until, q.get("before", ""))
    return Query(
        status, task_type, int(page), r, {"status": status, "type": task_type, "since": since, "until": until}
    )


async def _seq_at(s: Session, at: float) -> int | None:
    """The sequence of the first run event the stream stored at or after `at`; None: none."""
    start = dt.datetime.fromtimestamp(at, dt.UTC).isoformat().replace("+00:00", "Z")
    reply = await s.nc.request(
        f"$JS.API.STREAM.MSG.GET.{contract.RUNS_STREAM}", json.dumps({"start_time": start}).encode(), 5.0
    )
    answer = json.loads(reply.data or b"{}")
    if "error" in answer:
        if answer["error"].get("code") == 404:
            return None
        raise RuntimeError(f"NATS: {answer['error'].get('description')}")
    return int(answer["message"]["seq"])


async def recent_runs(s: Session, limit: int = RECENT_RUNS) -> list[contract.RunRecord]:
    """The last `limit` run events, oldest first."""
    return (await runs_between(s, Range(), limit)).records


async def runs_between(s: Session, r: Range, limit: int = RECENT_RUNS) -> Window:
    """The newest `limit` run events of the range (before `r.before` when given), oldest first."""
    from nats.js.errors import NotFoundError

    try:
        state = (await s.js.stream_info(contract.RUNS_STREAM)).state
    except NotFoundError:
        return Window([], None)
    first, last = state.first_seq or 1, state.last_seq or 0
    if r.until is not None:
        after = await _seq_at(s, r.until)
        last = last if after is None else after - 1
    if r.since is not None:
        first = await _seq_at(s, r.since) or last + 1
    if r.before is not None:
        last = min(last, r.before - 1)
    out: list[contract.RunRecord] = []
    seq = start = max(first, last - limit + 1)
    while seq <= last and len(out) < limit:
        try:
            msg = await s.js.get_msg(contract.RUNS_STREAM, seq, next=True)
        except NotFoundError:
            break
        assert msg.seq is not None
        if msg.seq > last:  # the next one kept is past the range
            break
        out.append(contract.decode_run(msg.data or b"{}"))
        seq = msg.seq + 1
    return Window(out, start if start > first else None)


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
