"""The worker's promises (README: How it works, Guarantees), each a numbered scenario with a real nats-server, real
`python -m worker` processes and real signals. Run records (ORDER_RUNS) count how often each
order really ran; KV ORDER_STATUS says how it ended.

Rules that need no process are proven once, in tests/worker/unit: retries with growing delays and the
dead letter after the last attempt (test_outcome.py), a poison message termed into the DLQ without a
run (test_pipeline.py::test_an_undecodable_message_goes_to_the_dlq_under_its_subjects_id_without_a_run),
the hard timeout as a failed attempt, a crashed slot counted, restarted and serving again
(test_pipeline.py). A dead letter end to end, with processes,
is tests/worker/test_long_jobs.py's (after hand-backs across processes) and
tests/worker/test_rescheduled_retries.py's (after a retry that waited as a scheduled message)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    NatsServer,
    cli,
    connect,
    consumer_info,
    count_events,
    events_per_order,
    http,
    publish_orders,
    records_of,
    run,
    run_records,
    statuses,
    wait_until,
)

from orderflow import contract
from worker import drainreport

pytestmark = pytest.mark.slow


def all_done(url: str, ids: list[str]) -> bool:
    st = run(statuses(url))
    return all(i in st and st[i].status == "done" for i in ids)


def first_start(records: dict[str, list[Any]], order_id: str, worker_id: str) -> Any:
    return next(r for r in records.get(order_id, []) if r.event == "start" and r.worker_id == worker_id)


def test_1_ack_pending_never_exceeds_the_total_slots(nats_server: NatsServer, spawn: Any) -> None:
    """1. Two workers x 4 slots; 500 short orders pass through.
    2. No delivery ever arrives for which a worker has no free slot (none is given back unstarted).
    3. consumer info is sampled every few ms the whole time: num_ack_pending never passes 8 by more
       than the acks in flight: a job's ack is not confirmed (its `done` is, before it), so the
       server may count a message whose ack it has not processed yet while the slot already runs
       the next one; at most one such ack per slot.
    4. Every order ran exactly once and is done."""
    workers = [spawn("worker", CONCURRENCY=4, WORK_S="0.005-0.03").wait_ready() for _ in range(2)]
    samples: list[int] = []
    done = threading.Event()

    async def sample() -> None:
        async with connect(nats_server.url) as nc:
            js = nc.jetstream()
            while not done.is_set():
                info = await js.consumer_info(contract.STREAM, "workers")
                samples.append(info.num_ack_pending or 0)
                await asyncio.sleep(0.005)

    sampler = threading.Thread(target=lambda: run(sample()))
    sampler.start()
    try:
        ids = run(publish_orders(nats_server.url, 500))
        wait_until(lambda: all_done(nats_server.url, ids), 60, "500 orders done", interval=0.5)
    finally:
        done.set()
        sampler.join()
    assert len(samples) > 50
    assert sum(w.metric("orderflow_drain_handed_back_total") for w in workers) == 0
    assert max(samples) <= 8 + 8, f"ack pending peaked at {max(samples)}"
    assert max(samples) >= 6  # the pool really was used
    starts = events_per_order(nats_server.url, "start")
    assert sorted(starts) == sorted(ids) and set(starts.values()) == {1}
    assert sum(w.metric("orderflow_work_done_total") for w in workers) == 500


def test_2_a_job_three_times_longer_than_ack_wait_runs_once(nats_server: NatsServer, spawn: Any) -> None:
    """1. ack_wait 1 s; the job takes 3.5 s; a second worker is idle and would grab a redelivery.
    2. Heartbeats (every ack_wait/3) keep the message ours: one start, one done, attempt 1."""
    workers = [spawn("worker", ACK_WAIT_S=1, WORK_S="3.5").wait_ready() for _ in range(2)]
    [order_id] = run(publish_orders(nats_server.url, 1))
    wait_until(lambda: all_done(nats_server.url, [order_id]), 15, "the long job to finish")
    records = records_of(nats_server.url, order_id)
    assert [(r.event, r.attempt) for r in records] == [("start", 1), ("done", 1)]
    info = run(consumer_info(nats_server.url))
    assert info.num_redelivered == 0 and info.num_ack_pending == 0
    assert info.config.ack_wait == 1
    # 3.5 s, never silent for more than ack_wait/2: at least 7 in_progress acks from whichever ran it.
    assert sum(w.metric("orderflow_heartbeats_total") for w in workers) >= 6


def test_3_sigterm_with_jobs_in_flight_finishes_them_and_exits_0(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    """1. One worker, 4 slots, 4 jobs of 2 s running.
    2. SIGTERM: /readyz turns 503, nothing new is fetched, the 4 jobs finish and are acked.
    3. Exit 0 well inside the drain budget; no order ran twice, none is left in the stream."""
    report_path = tmp_path / "drain.json"
    w = spawn("worker", CONCURRENCY=4, WORK_S="2", DRAIN_TIMEOUT_S=30, TERMINATION_LOG=str(report_path))
    w.wait_ready()
    ids = run(publish_orders(nats_server.url, 4))
    wait_until(lambda: w.metric("orderflow_tasks_in_flight") == 4, 10, "4 jobs in flight")
    w.signal(signal.SIGTERM)
    wait_until(lambda: w.get("/readyz")[0] == 503, 2, "readiness to turn 503")
    extra = run(publish_orders(nats_server.url, 2, prefix="late"))  # must not be taken while draining
    assert w.wait(20) == 0
    assert all_done(nats_server.url, ids)
    st = run(statuses(nats_server.url))
    assert all((st[i].attempts, st[i].deliveries) == (0, 1) for i in ids)
    starts = events_per_order(nats_server.url, "start")
    assert {i: starts[i] for i in ids} == dict.fromkeys(ids, 1)
    assert not any(i in starts for i in extra)
    info = run(consumer_info(nats_server.url))
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    assert info.num_pending == 2  # the late orders wait for the next worker
    report = drainreport.read(report_path)
    assert report is not None and report.event == "drained"
    assert (report.running_at_sigterm, report.handed_back_at_deadline, report.unstarted) == (4, 0, 0)


def test_4_a_drain_deadline_shorter_than_the_jobs_hands_them_back_at_once(
    nats_server: NatsServer, spawn: Any, tmp_path: Path
) -> None:
    """1. Worker A runs 2 jobs of 20 s with a 2 s drain budget; its handler never looks at
       job.stopping (tests/support/blocking.py: one sleep). Worker B is idle. ack_wait is 30 s.
    2. SIGTERM A: at the deadline A naks both (hand-back) and exits 0. (A handler that looks hands
       its job back itself at the SIGTERM: tests/worker/test_pod_deadline.py.)
    3. B starts each within 1 s of the deadline, not after ack_wait; each ends done once, and the
       hand-back cost no attempt (B runs attempt 1 too)."""
    report = tmp_path / "a.drain.json"  # its drain report (worker/drainreport.py)
    a = spawn(
        "worker",
        HANDLERS="blocking",
        CONCURRENCY=2,
        WORK_S="20",
        DRAIN_TIMEOUT_S=2,
        WORKER_ID="A",
        TERMINATION_LOG=str(report),
    ).wait_ready()
    ids = run(publish_orders(nats_server.url, 2))
    wait_until(lambda: a.metric("orderflow_tasks_in_flight") == 2, 10, "2 jobs running on A")
    spawn("worker", HANDLERS="blocking", CONCURRENCY=2, WORK_S="0.5", WORKER_ID="B").wait_ready()
    sigterm_at = time.time()
    a.signal(signal.SIGTERM)
    assert a.wait(10) == 0
    wait_until(lambda: all_done(nats_server.url, ids), 15, "B to finish the handed-back jobs")
    records = run(run_records(nats_server.url))
    deadline = sigterm_at + 2
    for order_id in ids:
        b_start = first_start(records, order_id, "B")
        assert b_start.attempt == 1
        assert b_start.at - deadline < 1.0, f"B started {b_start.at - deadline:.2f}s after the deadline"
        assert count_events(records, "done")[order_id] == 1
        assert [r.worker_id for r in records[order_id] if r.event == "done"] == ["B"]
    drained = drainreport.read(report)
    assert drained is not None and drained.event == "drained" and drained.worker_id == "A"
    assert (drained.running_at_sigterm, drained.handed_back_at_deadline) == (2, 2)
    assert (drained.ruled_by, drained.deadline_s) == ("budget", 2.0)


def test_5_sigkill_mid_job_is_redelivered_after_ack_wait_and_done_once(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. Worker A runs a 3 s job with ack_wait 2 s; SIGKILL A mid-job (no drain, no nak).
    2. Worker B receives it again only after ack_wait, runs it, it is done exactly once."""
    a = spawn("worker", ACK_WAIT_S=2, WORK_S="3", WORKER_ID="A").wait_ready()
    [order_id] = run(publish_orders(nats_server.url, 1))
    wait_until(lambda: a.metric("orderflow_tasks_in_flight") == 1, 10, "the job running on A")
    spawn("worker", ACK_WAIT_S=2, WORK_S="0.2", WORKER_ID="B").wait_ready()
    time.sleep(0.5)
    killed_at = time.time()
    a.process.kill(5)
    wait_until(lambda: all_done(nats_server.url, [order_id]), 15, "B to redo the job")
    records = records_of(nats_server.url, order_id)
    assert [(r.event, r.worker_id) for r in records] == [("start", "A"), ("start", "B"), ("done", "B")]
    # Not before ack_wait (2 s) from A's last heartbeat; A heart-beat until it died.
    assert records[1].at - killed_at > 0.9
    st = run(statuses(nats_server.url))[order_id]
    # A's run died: a crash, not a failed attempt
    assert (st.status, st.attempts, st.crashes, st.deliveries) == ("done", 0, 1, 2)


def test_8_orderflow_cancel_stops_a_running_job_and_records_it(nats_server: NatsServer, spawn: Any) -> None:
    """1. A 30 s job runs; `orderflow cancel ID` stops it on whichever worker holds it.
    2. Status cancelled, the message termed (never redelivered), the slot is free again.
    3. An order cancelled before any worker got it is termed without running."""
    w = spawn("worker", WORK_S="30", ACK_WAIT_S=2).wait_ready()
    [order_id] = run(publish_orders(nats_server.url, 1))
    wait_until(lambda: w.metric("orderflow_tasks_in_flight") == 1, 10, "the job to run")
    out = cli(nats_server.url, "cancel", order_id)
    assert out.returncode == 0 and "cancelled by" in out.stdout, out.stderr
    wait_until(lambda: w.metric("orderflow_tasks_in_flight") == 0, 3, "the slot to be free")
    assert run(statuses(nats_server.url))[order_id].status == "cancelled"
    assert cli(nats_server.url, "cancel", order_id).returncode == 1  # already final

    # An id nobody stored yet: refused unless --force (a pre-cancel of a keyed order to come).
    assert cli(nats_server.url, "cancel", "later-0", "--timeout-s", "0.5").returncode == 1
    out = cli(nats_server.url, "cancel", "later-0", "--timeout-s", "0.5", "--force")
    assert out.returncode == 0 and "cancelled in advance" in out.stdout
    run(publish_orders(nats_server.url, 1, prefix="later"))
    wait_until(
        lambda: (
            run(consumer_info(nats_server.url)).num_pending == 0
            and run(consumer_info(nats_server.url)).num_ack_pending == 0
        ),
        5,
        "the cancelled order to be termed",
    )
    time.sleep(4.5)  # > 2 x ack_wait
    info = run(consumer_info(nats_server.url))
    assert info.num_redelivered == 0 and info.num_ack_pending == 0
    records = run(run_records(nats_server.url))
    assert [r.event for r in records[order_id]] == ["start", "interrupted"]
    assert "later-0" not in records
    assert w.metric("orderflow_cancelled_total") == 1


def test_10_nats_restarted_mid_run_loses_nothing(nats_server: NatsServer, spawn: Any) -> None:
    """1. Ingest + 2 workers; orders flow in over HTTP while jobs run.
    2. nats-server restarts (same store). Clients get 503s meanwhile, never a false 200.
    3. Every order that got a 200 is done exactly once; nothing is lost."""
    ingest = spawn("ingest").wait_ready()
    for _ in range(2):
        spawn("worker", CONCURRENCY=4, WORK_S="0.05-0.3", ACK_WAIT_S=5).wait_ready()
    accepted: list[str] = []
    rejected = 0

    def post_some(n: int) -> None:
        nonlocal rejected
        import json

        for _ in range(n):
            status, _, body = http(
                "POST", ingest.url + "/orders", b'{"product_id":"1","count":"2","username":"m"}'
            )
            if status == 200:
                accepted.append(json.loads(body)["order_id"])
            else:
                assert status == 503
                rejected += 1

    post_some(60)
    nats_server.restart()
    post_some(10)
    wait_until(lambda: http("GET", ingest.url + "/readyz")[0] == 200, 15, "ingest ready again")
    post_some(60)
    wait_until(lambda: all_done(nats_server.url, accepted), 60, "every accepted order done", interval=0.5)
    done = events_per_order(nats_server.url, "done")
    assert {i: done.get(i, 0) for i in accepted} == dict.fromkeys(accepted, 1)
    assert len(accepted) >= 120


async def _claim(url: str, order_id: str, worker_id: str, age_s: float) -> None:
    """Write the `processing` status another worker would hold for a running job (its lease)."""
    async with connect(url) as nc:
        kv = await nc.jetstream().key_value(contract.STATUS_BUCKET)
        record = contract.StatusRecord(order_id, "processing", 1, time.time() - age_s, worker_id=worker_id)
        await kv.put(order_id, contract.encode(record))


def test_an_order_alive_on_another_worker_is_deferred_until_its_lease_expires(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. ack_wait 2 s, so a lease lasts 1.5 s. "ghost" holds a fresh lease on order o-0 (as a
       worker running it would, when a NATS restart redelivers it elsewhere). The orders are
       keyed, so even their first delivery reads the status (a generated id cannot have one).
    2. The worker receiving o-0 does not run it while the lease is fresh; once it has expired
       (the holder stopped heart-beating: it died) the order runs, once.
    3. A stale lease (the holder is long dead) does not hold anything up."""
    w = spawn("worker", ACK_WAIT_S=2, WORK_S="0.1", MAX_DELIVER=10).wait_ready()
    run(_claim(nats_server.url, "o-0", "ghost", age_s=0))
    claimed_at = time.time()
    run(publish_orders(nats_server.url, 1, keyed=True))
    wait_until(lambda: all_done(nats_server.url, ["o-0"]), 15, "o-0 to run after the lease")
    [start] = [r for r in records_of(nats_server.url, "o-0") if r.event == "start"]
    assert start.at - claimed_at >= 1.5
    assert "deferred" in w.logs()

    run(_claim(nats_server.url, "late-0", "ghost", age_s=10))
    started = time.time()
    run(publish_orders(nats_server.url, 1, prefix="late", keyed=True))
    wait_until(lambda: all_done(nats_server.url, ["late-0"]), 5, "late-0 to run at once")
    assert time.time() - started < 1.5
