"""Work redone: the seconds of job time run again after a hand-back or a crash, from the run records.

The demo handler appends a run record to ORDER_RUNS at each step of a run (worker/demo.py):
`start` with the progress it resumed from (0 on a first run, or when checkpoints are off),
`interrupted` with its progress when a hand-back or a cancel stopped it, `done` (progress = the
job's length) or `error`. A run whose worker was SIGKILLed ends without a record; the harness knows
when it killed that worker (a chaos SIGKILL, a SIGKILL at the end of a grace period, or a container
that died on its own), so that run ended at `start progress + (kill time - start time)`, at most the
job's length. A run with neither an end record nor a kill (a NATS outage swallowed its record) is
bounded the same way by the order's next start (`unrecorded`).

Per order, runs in the order they started; `reached` is the furthest progress any earlier run got
to (0 before the first):

    ran(run)    = end progress - start progress
    redone(run) = max(0, min(end progress, reached) - start progress)   then reached = max(reached, end)

A resumed run redoes only what its checkpoint had not kept; a run that starts over redoes everything
its predecessors did. Each run's redone seconds are charged to how the run before it ended (a
hand-back: `interrupted`; a crash: no record). Job time is the sum of the orders' lengths; the share
is redone / job time. A run that ends by none of these (no record, no kill, no later start) is
counted in `unended` and adds nothing.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orderflow.contract import RunRecord

ENDS = ("done", "interrupted", "error")


@dataclass(frozen=True)
class Run:
    order_id: str
    worker_id: str
    start_at: float  # epoch s
    start_s: float  # progress it resumed from
    end_s: float  # progress it got to
    ended_by: str  # done | interrupted | error | killed | unrecorded | unended
    length_s: float
    redone_s: float = 0.0
    cause: str = ""  # how the run before it ended: handback | crash | retry ("" for a first run)
    end_at: float | None = None  # epoch s: its end record, its kill, or the next start bounding it

    @property
    def ran_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


@dataclass
class Work:
    orders: int = 0
    runs: int = 0
    job_s: float = 0.0  # the orders' lengths
    ran_s: float = 0.0  # every run's job time, redone included
    redone_s: float = 0.0
    redone_by_cause: dict[str, float] = field(default_factory=dict)
    killed_runs: int = 0
    unrecorded_runs: int = 0  # no end record and no kill: ended by the order's next start
    unended_runs: int = 0
    resumed_runs: int = 0  # started from a checkpoint (progress > 0)

    @property
    def share(self) -> float:
        return self.redone_s / self.job_s if self.job_s else 0.0

    def figures(self) -> dict[str, object]:
        return {
            "orders": self.orders,
            "runs": self.runs,
            "job_s": round(self.job_s, 1),
            "ran_s": round(self.ran_s, 1),
            "redone_s": round(self.redone_s, 1),
            "redone_share": round(self.share, 4),
            "redone_by_cause_s": {k: round(v, 1) for k, v in sorted(self.redone_by_cause.items())},
            "killed_runs": self.killed_runs,
            "unrecorded_runs": self.unrecorded_runs,
            "unended_runs": self.unended_runs,
            "resumed_runs": self.resumed_runs,
        }


def _cause(ended_by: str) -> str:
    return {"interrupted": "handback", "killed": "crash", "error": "retry"}.get(ended_by, ended_by)


def order_runs(records: Sequence[RunRecord], deaths: Mapping[str, Sequence[float]]) -> list[Run]:
    """One order's runs from its records (in append order), ended, with their redone seconds.
    `deaths`: each worker id's sorted epoch times at which its container was killed or died."""
    if not records:
        return []
    length = max((r.length_s or 0.0) for r in records)
    starts = [r for r in records if r.event == "start"]
    open_runs: dict[str, RunRecord] = {}
    ended: list[tuple[RunRecord, float, str, float | None]] = []  # (start, end progress, how, when)

    def close_unrecorded(start: RunRecord) -> None:
        later = [s.at for s in starts if s.at > start.at]
        bound = later[0] if later else None
        kills = deaths.get(start.worker_id, ())
        i = bisect.bisect_right(kills, start.at)
        kill = kills[i] if i < len(kills) else None
        if kill is not None and (bound is None or kill <= bound):
            end_at, how = kill, "killed"
        elif bound is not None:
            end_at, how = bound, "unrecorded"  # its end record was lost; the next start bounds it
        else:
            ended.append((start, start.progress_s or 0.0, "unended", None))
            return
        progress = min(length, (start.progress_s or 0.0) + max(0.0, end_at - start.at))
        ended.append((start, progress, how, end_at))

    for r in records:
        if r.event == "start":
            previous = open_runs.pop(r.worker_id, None)
            if previous is not None:
                close_unrecorded(previous)
            open_runs[r.worker_id] = r
        elif r.event in ENDS:
            start = open_runs.pop(r.worker_id, None)
            if start is not None:
                end = length if r.event == "done" else (r.progress_s or start.progress_s or 0.0)
                ended.append((start, end, r.event, r.at))
    for start in open_runs.values():
        close_unrecorded(start)

    ended.sort(key=lambda e: e[0].at)
    runs: list[Run] = []
    reached = 0.0
    before = ""
    for start, end, how, end_at in ended:
        begin = start.progress_s or 0.0
        redone = max(0.0, min(end, reached) - begin)
        runs.append(
            Run(
                start.order_id,
                start.worker_id,
                start.at,
                begin,
                max(begin, end),
                how,
                length,
                redone,
                _cause(before) if runs else "",
                end_at,
            )
        )
        reached = max(reached, end)
        before = how
    return runs


def tally(runs_by_order: Mapping[str, Sequence[Run]]) -> Work:
    w = Work()
    for runs in runs_by_order.values():
        if not runs:
            continue
        w.orders += 1
        w.job_s += runs[0].length_s
        for run in runs:
            w.runs += 1
            w.ran_s += run.ran_s
            w.killed_runs += run.ended_by == "killed"
            w.unrecorded_runs += run.ended_by == "unrecorded"
            w.unended_runs += run.ended_by == "unended"
            w.resumed_runs += run.start_s > 0
            if run.redone_s > 0:
                w.redone_s += run.redone_s
                w.redone_by_cause[run.cause] = w.redone_by_cause.get(run.cause, 0.0) + run.redone_s
    return w


def waits(runs_by_order: Mapping[str, Sequence[Run]]) -> dict[str, list[float]]:
    """How long an order waited between one run's end and the next run's start, by how the run
    ended (handback: it was handed back; crash: its worker was killed, so the next run waited for
    the lease to lapse and the message to come back after ack_wait)."""
    out: dict[str, list[float]] = {}
    for runs in runs_by_order.values():
        for before, after in itertools.pairwise(runs):
            if before.end_at is None or before.ended_by not in ("interrupted", "killed"):
                continue
            out.setdefault(_cause(before.ended_by), []).append(max(0.0, after.start_at - before.end_at))
    return out


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p95 and max of some seconds."""
    if not values:
        return {"count": 0, "p50_s": None, "p95_s": None, "max_s": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"count": len(ordered), "p50_s": pick(0.5), "p95_s": pick(0.95), "max_s": round(ordered[-1], 2)}


def per_second(runs: Iterable[Run], wall0: float) -> dict[int, tuple[float, float]]:
    """{second since wall0: (new job time run in it, redone job time run in it)}. A run does its
    redone part first (from its start progress up to what earlier runs reached), then new work, one
    second of job time per second; so each value is also the number of slots doing that work."""
    out: dict[int, list[float]] = {}

    def add(t0: float, t1: float, i: int) -> None:
        t = t0
        while t < t1:
            sec = int(t // 1)
            upto = min(t1, sec + 1.0)
            out.setdefault(sec, [0.0, 0.0])[i] += upto - t
            t = upto

    for run in runs:
        t0 = run.start_at - wall0
        add(t0, t0 + run.redone_s, 1)
        add(t0 + run.redone_s, t0 + run.ran_s, 0)
    return {k: (v[0], v[1]) for k, v in sorted(out.items())}
