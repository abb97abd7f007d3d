"""The ledger: for every order the client got a 200 for, how did it end?

Read from JetStream after the backlog drained: KV ORDER_STATUS (last value per key), every run
record in ORDER_RUNS, and whatever is still in the ORDERS stream (work-queue retention: only
messages not yet acknowledged remain). Each accepted order lands in exactly one class:

- done_once   status done, exactly one "done" run record          (the only good class)
- done_twice  two or more "done" run records                      (the handler's work ran twice)
- in_flight   not done, its message still in ORDERS               (the drain wait ran out)
- lost        not done, no message left, not dead/failed/cancelled (nothing will ever run it)
- dead / failed / cancelled, and done_status_missing (one done run, status not done)

Beside the classes: hand-backs per order (the status record's count), the dead letters by what the
rules say (after MAX_DELIVER failed attempts, after MAX_CRASHES crashes, or *without a failure*:
neither, e.g. hand-backs used up a delivery budget), and the work redone (chaos/work.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js import api as jsapi
from nats.js.errors import NotFoundError

from orderflow import contract
from orderflow_tools.chaos.work import Run, Work, order_runs, tally

GOOD = "done_once"


@dataclass
class Ledger:
    accepted: int
    classes: dict[str, int]
    examples: dict[str, list[str]]  # a few order ids per bad class
    done_twice_unaccepted: int  # stored without a 200 reaching the client, yet done twice
    stored_without_200: int  # orders processed although the client never saw their 200
    runs_started: int
    redelivered_starts: int  # run starts with attempt > 1
    max_attempt: int
    stream_left: int
    dlq: int
    attempts_histogram: dict[int, int] = field(default_factory=dict)
    # the run records of the example orders: "event worker attempt@time" in append order
    history: dict[str, list[str]] = field(default_factory=dict)
    handbacks: dict[str, float] = field(default_factory=dict)  # per accepted order: max, mean, ...
    crashes: dict[str, float] = field(default_factory=dict)  # the same for crashes
    dead: dict[str, int] = field(default_factory=dict)  # dead letters by reason
    work: Work = field(default_factory=Work)
    runs: dict[str, list[Run]] = field(default_factory=dict)  # every order's runs, ended

    @property
    def ok(self) -> bool:
        return self.accepted > 0 and self.classes.get(GOOD, 0) == self.accepted

    def bad(self) -> dict[str, int]:
        return {k: v for k, v in self.classes.items() if k != GOOD and v}


async def _read_all(js: Any, stream: str, subject: str, per_subject_last: bool = False) -> list[Any]:
    """Every message of a stream (or the last per subject) through an ordered consumer: one pass,
    no acks, flow-controlled by the server."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    if info.state.messages == 0:
        return []
    policy = jsapi.DeliverPolicy.LAST_PER_SUBJECT if per_subject_last else jsapi.DeliverPolicy.ALL
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=policy,
        pending_msgs_limit=-1,
        pending_bytes_limit=-1,
    )
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            out.append(msg)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out


async def _remaining_orders(js: Any) -> list[str]:
    info = await js.stream_info(contract.STREAM)
    ids: list[str] = []
    if info.state.messages == 0:
        return ids
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(contract.STREAM, seq)
        except NotFoundError:
            continue
        try:
            ids.append(contract.decode_order(msg.data).order_id)
        except Exception:
            ids.append((msg.headers or {}).get(contract.H_MSG_ID, f"seq-{seq}"))
    return ids


async def run_records(url: str) -> dict[str, list[contract.RunRecord]]:
    """ORDER_RUNS as {order_id: [record, ...]} in append order, read in one pass (raises if it
    cannot be read: a test must not pass on an empty read)."""
    nc = await nats.connect(servers=url.split(","), max_reconnect_attempts=5, connect_timeout=5)
    try:
        msgs = await _read_all(nc.jetstream(timeout=10), contract.RUNS_STREAM, contract.RUNS_SUBJECTS[0])
    finally:
        await nc.close()
    out: dict[str, list[contract.RunRecord]] = {}
    for m in msgs:
        rec = contract.decode_run(m.data)
        out.setdefault(rec.order_id, []).append(rec)
    return out


async def read(
    url: str,
    accepted: set[str],
    deaths: Mapping[str, Sequence[float]] | None = None,
    max_deliver: int = 5,
    max_crashes: int = 3,
) -> Ledger:
    """The ledger of `accepted`. `deaths`: every worker id's epoch times of a kill (the work-redone
    figure ends its runs there); the limits sort the dead letters. `url`: one server or a
    cluster's servers, comma-separated."""
    nc = await nats.connect(servers=url.split(","), max_reconnect_attempts=5, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        status_msgs = await _read_all(
            js, "KV_" + contract.STATUS_BUCKET, contract.STATUS_SUBJECT_PREFIX + ">", per_subject_last=True
        )
        run_msgs = await _read_all(js, contract.RUNS_STREAM, contract.RUNS_SUBJECTS[0])
        left = await _remaining_orders(js)
        try:
            dlq = (await js.stream_info(contract.DLQ_STREAM)).state.messages
        except NotFoundError:
            dlq = 0
    finally:
        await nc.close()
    records: dict[str, contract.StatusRecord] = {}
    for m in status_msgs:
        if m.data:
            records[m.subject[len(contract.STATUS_SUBJECT_PREFIX) :]] = contract.decode_status(m.data)
    statuses = {k: r.status for k, r in records.items()}
    done_runs: Counter[str] = Counter()
    starts = 0
    redelivered = 0
    attempts: Counter[int] = Counter()
    runs_of: dict[str, list[contract.RunRecord]] = {}
    for m in run_msgs:
        rec = contract.decode_run(m.data)
        runs_of.setdefault(rec.order_id, []).append(rec)
        if rec.event == "done":
            done_runs[rec.order_id] += 1
            attempts[rec.attempt] += 1
        elif rec.event == "start":
            starts += 1
            redelivered += rec.attempt > 1
    result = classify(accepted, statuses, done_runs, set(left), starts, redelivered, dict(attempts), dlq)
    for ids in result.examples.values():
        for order_id in ids:
            result.history[order_id] = [
                f"{r.event} {r.worker_id} {r.attempt}@{r.at:.3f} {r.progress_s}/{r.length_s}"
                for r in runs_of.get(order_id, [])
            ]
            result.history[order_id].append(f"status {statuses.get(order_id)}")
    result.handbacks = per_order(accepted, records, "handbacks")
    result.crashes = per_order(accepted, records, "crashes")
    result.dead = dead_letters(records, max_deliver, max_crashes)
    result.runs = {k: order_runs(v, deaths or {}) for k, v in runs_of.items()}
    result.work = tally(result.runs)
    return result


def per_order(
    accepted: set[str], records: Mapping[str, contract.StatusRecord], count: str
) -> dict[str, float]:
    """A status record's count (`handbacks`, `crashes`: they carry over from run to run) over the
    accepted orders: max, mean, how many orders have one at least, total."""
    counts = [int(getattr(records[k], count)) if k in records else 0 for k in accepted]
    return {
        "max": max(counts, default=0),
        "mean": round(sum(counts) / len(counts), 3) if counts else 0.0,
        "orders": sum(1 for c in counts if c),
        "total": sum(counts),
    }


def dead_letters(
    records: Mapping[str, contract.StatusRecord], max_deliver: int, max_crashes: int
) -> dict[str, int]:
    """Dead orders by the rule that sent them: failed attempts, crashes, or none (without a failure)."""
    out = {"after_failures": 0, "after_crashes": 0, "without_failure": 0}
    for r in records.values():
        if r.status != "dead":
            continue
        if r.attempts >= max_deliver:
            out["after_failures"] += 1
        elif r.crashes >= max_crashes:
            out["after_crashes"] += 1
        else:
            out["without_failure"] += 1
    return out


def classify(
    accepted: set[str],
    statuses: dict[str, str],
    done_runs: Counter[str],
    in_stream: set[str],
    starts: int = 0,
    redelivered: int = 0,
    attempts: dict[int, int] | None = None,
    dlq: int = 0,
) -> Ledger:
    classes: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for order_id in accepted:
        runs = done_runs.get(order_id, 0)
        status = statuses.get(order_id)
        if runs >= 2:
            kind = "done_twice"
        elif runs == 1:
            kind = GOOD if status == "done" else "done_status_missing"
        elif order_id in in_stream:
            kind = "in_flight"
        elif status in ("dead", "failed", "cancelled"):
            kind = status
        else:
            kind = "lost"
        classes[kind] += 1
        if kind != GOOD and len(examples.setdefault(kind, [])) < 10:
            examples[kind].append(order_id)
    classes.setdefault(GOOD, 0)
    for kind in ("done_twice", "lost", "in_flight"):
        classes.setdefault(kind, 0)
    unaccepted_done = {k for k in done_runs if k not in accepted}
    return Ledger(
        accepted=len(accepted),
        classes=dict(classes),
        examples=examples,
        done_twice_unaccepted=sum(1 for k in unaccepted_done if done_runs[k] >= 2),
        stored_without_200=len(unaccepted_done),
        runs_started=starts,
        redelivered_starts=redelivered,
        max_attempt=max(attempts or {0: 0}),
        stream_left=len(in_stream),
        dlq=dlq,
        attempts_histogram=dict(sorted((attempts or {}).items())),
    )


async def backlog(url: str) -> tuple[int, int] | None:
    """(pending, ack pending) summed over the ORDERS consumers, straight from the server."""
    try:
        # max_reconnect_attempts=0 would mean "no limit" (see orderflow_tools.cli.CONNECT_ATTEMPTS)
        nc = await nats.connect(
            servers=url.split(","), max_reconnect_attempts=1, connect_timeout=2, allow_reconnect=False
        )
    except Exception:
        return None
    try:
        js = nc.jetstream(timeout=3)
        pending = ack_pending = 0
        for c in await js.consumers_info(contract.STREAM):
            pending += c.num_pending or 0
            ack_pending += c.num_ack_pending or 0
        return pending, ack_pending
    except Exception:
        return None
    finally:
        await nc.close()


def read_backlog(url: str) -> tuple[int, int] | None:
    return asyncio.run(backlog(url))
