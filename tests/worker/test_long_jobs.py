"""Long jobs survive any number of scale-downs (issue #10, item 4): a hand-back costs no attempt, a
run whose worker died is a crash with its own limit, a failing handler is bounded by its failed
attempts alone, and a checkpointing job resumes where it stopped. Real nats-server, real
`python -m worker` processes, real SIGTERM and SIGKILL; run records (ORDER_RUNS) say what really
ran, the status record (KV ORDER_STATUS) and ORDERS_DLQ how it ended."""

from __future__ import annotations

import itertools
import signal
import time
from typing import Any

import pytest
from harness import (
    NatsServer,
    Service,
    read_stream,
    records_of,
    run,
    status_of,
)
from order_waits import assert_consumer_idle, publish_one, the_dead_letter, wait_started_on, wait_status

from orderflow import contract

pytestmark = pytest.mark.slow


def events(records: list[contract.RunRecord], event: str) -> list[contract.RunRecord]:
    return [r for r in records if r.event == event]


def sigterm_and_wait(w: Service) -> None:
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0, w.logs()[-3000:]


def scale_down_while_running(
    spawn: Any, url: str, worker_id: str, settings: dict[str, Any], order_id: str, prefix: str
) -> tuple[str, Service, contract.StatusRecord]:
    """A worker starts and gets the order (published now if `order_id` is empty: the first worker
    made the stream); once it runs there, SIGTERM (a scale-down) and its exit 0. Returns the order
    id, the worker and the order's status after the drain."""
    w = spawn("worker", WORKER_ID=worker_id, **settings).wait_ready()
    order_id = order_id or publish_one(url, prefix)
    wait_started_on(url, order_id, worker_id)
    sigterm_and_wait(w)
    st = status_of(url, order_id)
    assert st is not None
    return order_id, w, st


def sigkill(w: Service) -> float:
    killed_at = time.time()
    w.process.kill(10)
    return killed_at


@pytest.mark.timeout(400)
def test_a_job_handed_back_ten_times_ends_done_once_and_costs_no_attempt(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. One demo order of 8 s; a 1 s drain budget, so every scale-down hands it back (the demo
       handler itself, at SIGTERM: the rest of the job cannot fit the deadline). Each run lasts
       from its start to the SIGTERM right after it (0.03 s on average, a loaded machine),
       so ten of them leave most of the job, far more than the deadline.
    2. Ten times over: a worker starts it, is SIGTERMed a moment later, hands it back at its drain
       deadline and exits 0; each hand-back is recorded (status `queued`, handbacks + 1) and costs
       no attempt: every run starts as attempt 1.
    3. An eleventh worker is left alone: it resumes from the last checkpoint and finishes.
    4. The order is `done` once (one `done` run record), its status says handbacks=10, attempts=0,
       crashes=0, deliveries=11; nothing is left on the consumer."""
    url = nats_server.url
    length = 8
    settings = {"CONCURRENCY": 1, "WORK_S": str(length), "DRAIN_TIMEOUT_S": 1}
    order_id = ""
    for i in range(10):
        order_id, w, st = scale_down_while_running(spawn, url, f"w{i}", settings, order_id, "long")
        assert (st.status, st.handbacks, st.attempts, st.crashes) == ("queued", i + 1, 0, 0), st
        assert "1 handed back by their handlers" in w.logs()
        # Progress is kept, not restarted: had it reached the end the job would be done already.
        assert all((r.progress_s or 0) < length for r in events(records_of(url, order_id), "interrupted"))

    spawn("worker", WORKER_ID="w10", **settings).wait_ready()
    wait_status(url, order_id, "done", 90, "the last worker to finish the job", 0.5)
    records = records_of(url, order_id)
    starts = events(records, "start")
    assert [r.worker_id for r in starts] == [f"w{i}" for i in range(11)]
    assert {r.attempt for r in starts} == {1}  # a hand-back is not an attempt
    # Every run resumed from its last checkpoint, never from 0: from where the run before it
    # stopped, when that run's checkpoint at SIGTERM made it in time and it recorded
    # `interrupted` (on a quiet machine: every time).
    progress = [r.progress_s or 0.0 for r in starts]
    assert progress[0] == 0 and all(b >= a for a, b in itertools.pairwise(progress)), progress
    stopped = {r.worker_id: r for r in events(records, "interrupted")}
    resumed = [(stopped[f"w{i}"], starts[i + 1]) for i in range(10) if f"w{i}" in stopped]
    assert resumed, "no run checkpointed while it unwound"
    for stop, start in resumed:
        assert start.progress_s == pytest.approx(stop.progress_s, abs=0.002), (stop, start)
    assert progress[-1] > 0
    [done] = events(records, "done")
    assert done.worker_id == "w10" and done.length_s == length and done.progress_s == pytest.approx(length)
    final = status_of(url, order_id)
    assert final is not None
    assert (final.status, final.attempts, final.handbacks, final.crashes, final.deliveries) == (
        "done",
        0,
        10,
        0,
        11,
    ), final
    assert_consumer_idle(url)
    assert run(read_stream(url, contract.DLQ_STREAM)) == []


@pytest.mark.timeout(300)
def test_a_job_whose_worker_is_killed_three_times_is_dead_lettered_with_the_crash_reason(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. ack_wait 2 s; a 60 s demo order. Worker k0 runs it and is SIGKILLed (no drain, no nak).
    2. After ack_wait the message comes back to k1: the previous run's lease has lapsed with the
       status still `processing`, so it is a crash (1 of 3), not an attempt; k1 runs it. SIGKILL k1.
    3. k2 finds crash 2 of 3: the order still runs (not dead-lettered before the limit). SIGKILL k2.
    4. k3 finds crash 3 of 3: it does not run the order but copies it to ORDERS_DLQ with the
       reason "its worker died 3 times while running it" and the counts in its headers; status
       `dead` with crashes=3, attempts=0; the message is gone from the consumer."""
    url = nats_server.url
    settings = {"ACK_WAIT_S": 2, "WORK_S": "60", "MAX_CRASHES": 3}
    worker = spawn("worker", WORKER_ID="k0", **settings).wait_ready()
    order_id = publish_one(url, "crashing")
    for i in range(3):
        wait_started_on(url, order_id, f"k{i}")
        # The run holds its lease (a first delivery writes it once it has run lease_after_s, a
        # redelivery before it starts): what the next one reads.
        lease = wait_status(url, order_id, "processing", 10, "the run's lease", 0.1)
        assert (lease.worker_id, lease.crashes, lease.attempts) == (f"k{i}", i, 0), lease
        sigkill(worker)
        worker = spawn("worker", WORKER_ID=f"k{i + 1}", **settings).wait_ready()

    wait_status(url, order_id, "dead", 30, "the order to be dead-lettered")
    starts = events(records_of(url, order_id), "start")
    assert [r.worker_id for r in starts] == ["k0", "k1", "k2"]  # k3 never ran it
    assert {r.attempt for r in starts} == {1}  # a crash is not a failed attempt
    final = status_of(url, order_id)
    assert final is not None
    reason = "its worker died 3 times while running it"
    assert (final.status, final.crashes, final.attempts, final.handbacks) == ("dead", 3, 0, 0)
    assert final.error == reason
    h = the_dead_letter(url, order_id)
    assert h[contract.H_ERROR] == reason
    assert (h[contract.H_CRASHES], h[contract.H_ATTEMPTS], h[contract.H_DELIVERIES]) == ("3", "0", "4")
    assert "crash 3 of 3" in worker.logs()
    assert worker.metric("orderflow_dead_letters_total") == 1
    assert_consumer_idle(url)


@pytest.mark.timeout(300)
def test_a_handler_that_always_fails_is_dead_lettered_after_max_deliver_failed_attempts_whatever_the_hand_backs(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. Every run of the demo handler fails at its end (WORK_FAIL_RATE=1); MAX_DELIVER=3; the job
       is 4 s long and the drain budget 1 s (the three runs cut short last from their start to
       the SIGTERM right after it: the rest never fits the drain, and each hands back).
    2. Three workers in turn start it and are SIGTERMed mid-run: three hand-backs, no attempt.
    3. A fourth worker is left alone: attempt 1 runs to the end and fails, attempts 2 and 3 fail too
       (after a short backoff each); after the third failed attempt, and not before, the order is
       dead-lettered: status `dead`, "failed 3 attempts", handbacks=3, deliveries=6, and the DLQ
       copy says so in its headers. On a design that counts deliveries it would have been dead
       after three hand-backs without a single failure."""
    url = nats_server.url
    settings = {
        "WORK_S": "4",
        "WORK_FAIL_RATE": 1,
        "MAX_DELIVER": 3,
        "RETRY_BASE_S": "0.1",
        "DRAIN_TIMEOUT_S": 1,
        "CONCURRENCY": 1,
    }
    order_id = ""
    for i in range(3):
        order_id, _, st = scale_down_while_running(spawn, url, f"h{i}", settings, order_id, "failing")
        assert (st.status, st.handbacks, st.attempts) == ("queued", i + 1, 0), st
    assert events(records_of(url, order_id), "error") == []  # no failure so far

    last = spawn("worker", WORKER_ID="h3", **settings).wait_ready()
    wait_status(url, order_id, "dead", 60, "the order to be dead-lettered")
    records = records_of(url, order_id)
    starts = events(records, "start")
    assert [(r.worker_id, r.attempt) for r in starts] == [
        ("h0", 1),
        ("h1", 1),
        ("h2", 1),
        ("h3", 1),
        ("h3", 2),
        ("h3", 3),
    ]
    assert [r.attempt for r in events(records, "error")] == [1, 2, 3]
    final = status_of(url, order_id)
    assert final is not None
    assert (final.status, final.attempts, final.handbacks, final.crashes, final.deliveries) == (
        "dead",
        3,
        3,
        0,
        6,
    ), final
    assert (final.error or "").startswith("failed 3 attempts; last: SimulatedFailure"), final.error
    h = the_dead_letter(url, order_id)
    assert "failed 3 attempts" in h[contract.H_ERROR]
    assert (h[contract.H_ATTEMPTS], h[contract.H_HANDBACKS], h[contract.H_DELIVERIES]) == ("3", "3", "6")
    assert last.metric("orderflow_dead_letters_total") == 1
    assert_consumer_idle(url)


@pytest.mark.timeout(300)
def test_a_checkpointing_job_resumes_from_its_last_checkpoint_after_a_sigterm_and_after_a_sigkill(
    nats_server: NatsServer, spawn: Any
) -> None:
    """1. A 10 s demo order: it checkpoints every 1 s (10 % of its length). ack_wait 2 s, drain
       budget 5 s (hand-back 0.5 s before the deadline, 0.25 s of it to checkpoint while unwinding).
    2. Worker A runs it; B stands by. SIGTERM A a second into the job: the rest (9 s) does not
       fit A's deadline (4.5 s), so the demo handler checkpoints the progress made since its last
       step at once and hands the job back (job.stopping, job.handback()).
    3. B starts exactly where A stopped (its `start` record's progress is A's `interrupted` one).
    4. C stands by; SIGKILL B 2.5 s into its run (mid-step): no hand-back, no last checkpoint.
    5. After ack_wait C gets it and resumes from B's last periodic checkpoint: at most one step
       (1 s) behind where B was when it died, and past where B started.
    6. C finishes: one `done`, the whole length done. The job time run in total (A's, B's until
       the kill, C's) stays close to the job's length: the work redone is bounded by the step that
       the SIGKILL lost, plus scheduling slack; the status's run_s says the same."""
    url = nats_server.url
    settings = {"WORK_S": "10", "ACK_WAIT_S": 2, "DRAIN_TIMEOUT_S": 5, "CONCURRENCY": 1}
    length, step = 10.0, 1.0
    a = spawn("worker", WORKER_ID="A", **settings).wait_ready()
    order_id = publish_one(url, "resumable")
    a_start = wait_started_on(url, order_id, "A")
    b = spawn("worker", WORKER_ID="B", **settings).wait_ready()
    time.sleep(max(0.0, a_start.at + 1.0 - time.time()))
    sigterm_and_wait(a)

    b_start = wait_started_on(url, order_id, "B")
    [a_stop] = [r for r in events(records_of(url, order_id), "interrupted") if r.worker_id == "A"]
    # it ran until the SIGTERM, a second in (a step is 1 s: past its first periodic checkpoint)
    assert a_stop.progress_s is not None and a_stop.progress_s > 0.9
    # 3: resumed from the checkpoint A made at the SIGTERM, not from its last step, not from 0
    assert b_start.progress_s == pytest.approx(a_stop.progress_s, abs=0.002)
    assert b_start.length_s == a_stop.length_s == length

    c = spawn("worker", WORKER_ID="C", **settings).wait_ready()
    time.sleep(max(0.0, b_start.at + 2.5 - time.time()))
    killed_at = sigkill(b)

    c_start = wait_started_on(url, order_id, "C")
    wait_status(url, order_id, "done", 40, "C to finish the job")
    records = records_of(url, order_id)
    assert [(r.event, r.worker_id) for r in records] == [
        ("start", "A"),
        ("interrupted", "A"),
        ("start", "B"),
        ("start", "C"),
        ("done", "C"),
    ]
    # B's progress when it died, by the wall clock: an upper bound (sleeps only run late).
    assert b_start.progress_s is not None and c_start.progress_s is not None
    b_at_kill = b_start.progress_s + (killed_at - b_start.at)
    assert b_start.progress_s < c_start.progress_s <= b_at_kill  # 5: resumed, from B's checkpoints
    lost_to_kill = b_at_kill - c_start.progress_s
    assert lost_to_kill <= step + 0.5, f"the SIGKILL lost {lost_to_kill:.2f}s, more than one step"
    done = records[-1]
    assert done.length_s == length and done.progress_s == pytest.approx(length)
    ran_s = (a_stop.at - a_start.at) + (killed_at - b_start.at) + (done.at - c_start.at)
    redone_s = ran_s - length
    assert redone_s <= step + 1.5, f"{ran_s:.2f}s run for a {length:g}s job"
    st = status_of(url, order_id)
    assert st is not None
    assert (st.status, st.attempts, st.handbacks, st.crashes, st.deliveries) == ("done", 0, 1, 1, 3), st
    # run_s counts B's run up to its last lease write (a heartbeat or checkpoint before the kill)
    assert length - 0.2 <= st.run_s <= ran_s + 0.2, (st.run_s, ran_s)
    assert c.metric("orderflow_crashes_total") == 1
