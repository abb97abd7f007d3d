"""One task type's job path in process: the real JobPipeline, Pool, Settler and hooks against the
stand-in transport. Each test drives deliveries into the pool and reads what reached "NATS"."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from standin import FakeMsg, StandInTransport, fast_timing, limits, settings

from orderflow import contract
from orderflow.metrics import WorkerMetrics
from worker.admission import Recovery
from worker.delivery import Delivery, Kind
from worker.handlers import CheckpointError, Job, StopSignal
from worker.hooks import Hook, Hooks, MetricsHook
from worker.path import build
from worker.payload import SEED, PayloadCodec
from worker.timing import Timing


class Recorder(Hook):
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, d: Delivery) -> None:
        self.events.append(("started", d.order_id))

    def crash_found(self, d: Delivery, lost_s: float) -> None:
        self.events.append(("crash", d.order_id))

    def adopted(self, d: Delivery) -> None:
        self.events.append(("adopted", d.order_id))

    def settled(self, d: Delivery, kind: Kind, seconds: float) -> None:
        self.events.append((kind.value, d.order_id))

    def crashed(self, where: str) -> None:
        self.events.append(("crashed", where))


Handler = Callable[[Job], Coroutine[Any, Any, None]]


class Rig:
    def __init__(
        self,
        handler: Handler,
        timing: Timing | None = None,
        timeout_s: float = 60.0,
        cancelled: frozenset[str] = frozenset(),
        recovering: bool = False,
        codec: PayloadCodec = SEED,
        deliver: Handler | None = None,
        extra_hooks: tuple[Hook, ...] = (),
        **env: object,
    ) -> None:
        self.t = StandInTransport()
        self.timing = timing or fast_timing()
        s = settings(**env)
        lim = limits(s, self.timing.reschedule_after_s)
        self.hooks = Recorder()
        recovery = Recovery(self.timing.recovery_window_s)
        if recovering:
            recovery.open()
        path = build(
            "default", handler, self.t, Hooks(self.hooks, *extra_hooks), self.timing, lim,
            worker_id="me", capacity=4, timeout_s=timeout_s, recovery=recovery,
            is_cancelled=cancelled.__contains__, schedules=True, codec=codec, deliver=deliver,
        )  # fmt: skip
        self.pipeline, self.pool = path.pipeline, path.pool

    async def until_idle(self, timeout_s: float = 5.0) -> None:
        await asyncio.sleep(0)
        await asyncio.wait_for(self.pool.wait_idle(), timeout_s)
        for _ in range(5):  # side tasks (a crashed slot's settle) finish right after
            await asyncio.sleep(0.01)


def run_one(handler: Handler, msg: FakeMsg | None = None, ticking: bool = False, **rig: Any) -> Rig:
    """One delivery (o-1 unless `msg`) through a fresh Rig(handler, **rig), until its pool is idle;
    `ticking`: with the pool's ticker running (heartbeats, leases, the hard timeout)."""

    async def main() -> Rig:
        r = Rig(handler, **rig)
        r.pool.start(msg or FakeMsg("o-1"))
        ticker = asyncio.create_task(r.pool.ticker()) if ticking else None
        await r.until_idle()
        if ticker is not None:
            ticker.cancel()
        return r

    return asyncio.run(main())


async def noop(job: Job) -> None:
    return None


def test_a_first_delivery_of_a_short_job_reads_nothing_and_stores_only_its_done() -> None:
    rig = run_one(noop)
    assert rig.t.ops() == ["put:done", "ack"]
    assert rig.hooks.events == [("started", "o-1"), ("done", "o-1")]


def test_a_redelivery_reads_its_record_and_holds_the_lease_before_running() -> None:
    async def main() -> Rig:
        rig = Rig(noop)
        rig.t.records["o-1"] = contract.StatusRecord("o-1", "queued", handbacks=1)
        rig.pool.start(FakeMsg("o-1", delivered=2))
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert rig.t.ops() == ["get", "in_progress", "put:processing", "put:done", "ack"]
    assert rig.t.calls[2][2] == ("processing", True)  # the eager lease is confirmed
    assert (rig.t.records["o-1"].handbacks, rig.t.records["o-1"].deliveries) == (1, 2)


def test_inside_the_recovery_window_an_old_first_delivery_with_no_record_waits_for_a_lease() -> None:
    async def main() -> Rig:
        rig = Rig(noop, recovering=True)
        rig.pool.start(FakeMsg("o-1", published_at=0.0))  # published before the restart
        rig.pool.start(FakeMsg("o-2", seq=2))  # published after it: runs at once
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert rig.t.ops("o-1") == [
        "get",
        "in_progress",
        "get",
        "in_progress",
        "put:processing",
        "put:done",
        "ack",
    ]
    assert rig.t.ops("o-2") == ["get", "in_progress", "put:processing", "put:done", "ack"]


def test_inside_the_recovery_window_even_a_first_delivery_reads_its_status() -> None:
    async def main() -> Rig:
        rig = Rig(noop, recovering=True)
        rig.t.records["o-1"] = contract.StatusRecord("o-1", "done")
        rig.pool.start(FakeMsg("o-1"))
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert rig.t.ops() == ["get", "ack"]  # the done-dedupe
    assert rig.hooks.events == [("already_done", "o-1")]


def test_a_keyed_order_is_read_on_its_first_delivery_but_leases_lazily() -> None:
    assert run_one(noop, msg=FakeMsg("k-1", headers={contract.H_STATUS_CHECK: "1"})).t.ops() == [
        "get",
        "put:done",
        "ack",
    ]


def test_a_cancel_marker_terms_a_first_delivery_unrun() -> None:
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.order.order_id)

    rig = run_one(handler, cancelled=frozenset({"o-1"}))
    assert ran == [] and rig.t.ops() == ["put:cancelled", "term", "forget_cancel"]


def test_a_long_job_writes_its_lease_once_it_has_run_lease_after_s_then_with_each_heartbeat() -> None:
    async def slow(job: Job) -> None:
        await asyncio.sleep(0.9)

    timing = fast_timing(ack_wait_s=0.6)  # heartbeat 0.2 s, lease after 0.2 s, tick 0.1 s
    rig = run_one(slow, timing=timing, ticking=True)
    ops = rig.t.ops()
    assert ops[:2] == ["in_progress", "put:processing"]
    assert ops[-2:] == ["put:done", "ack"]
    leases = [c for c in rig.t.calls if c[0] == "put" and c[2] == ("processing", False)]
    assert 3 <= len(leases) <= 5  # ~0.2, 0.4, 0.6, 0.8 s
    assert ops.count("in_progress") == len(leases)  # every lease restarts the ack clock


def test_a_checkpoint_made_while_unwinding_a_hand_back_is_stored_and_the_next_run_resumes() -> None:
    seen: list[Any] = []
    at_five = asyncio.Event()

    async def cursor(job: Job) -> None:
        seen.append(job.resume_from)
        i = (job.resume_from or {}).get("i", 0)
        try:
            while i < 10:
                await asyncio.sleep(0.02)
                i += 1
                if i == 5:
                    at_five.set()
                if i % 3 == 0:
                    await job.checkpoint({"i": i})
        except asyncio.CancelledError:
            await job.checkpoint({"i": i})
            raise

    async def main() -> Rig:
        rig = Rig(cursor)
        rig.pool.start(FakeMsg("o-1"))
        # i reaches 5: checkpoint 3 is stored, 4-5 are not yet (a fixed 0.11 s sleep raced the
        # 20 ms steps on a loaded machine)
        await at_five.wait()
        [slot] = list(rig.pool)
        rig.pool.stop(slot, Kind.HANDED_BACK, unwind_s=1.0)
        await rig.until_idle()
        rig.pool.start(FakeMsg("o-1", delivered=2))
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert seen[0] is None and seen[1] == {"i": 5}
    record = rig.t.records["o-1"]
    assert (record.status, record.handbacks, record.attempts) == ("done", 1, 0)
    assert ("handed_back", "o-1") in rig.hooks.events


def test_a_handler_that_ignores_the_hand_back_is_cut_short_after_the_unwind_bound() -> None:
    async def stubborn(job: Job) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(60)  # "checkpointing" forever

    async def main() -> tuple[Rig, float]:
        rig = Rig(stubborn)
        rig.pool.start(FakeMsg("o-1"))
        await asyncio.sleep(0.05)
        [slot] = list(rig.pool)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        rig.pool.stop(slot, Kind.HANDED_BACK, unwind_s=0.2)
        await rig.until_idle()
        return rig, loop.time() - t0

    rig, took = asyncio.run(main())
    assert 0.15 < took < 1.0
    assert rig.t.ops()[-2:] == ["put:queued", "nak"]


def test_a_handler_that_checkpoints_and_hands_back_on_stopping_costs_no_attempt_and_no_cancel() -> None:
    """
    1. A long job runs; the worker starts to drain (job.stopping set, 5 s before its hand-back).
    2. The handler sees it, checkpoints and calls job.handback(), then returns: the order goes
       back at once (`queued`, a bare nak) with a hand-back on its books and no failed attempt,
       without a cancel; the next run resumes from the checkpoint.
    3. job.handback() while the worker is not stopping is refused.
    """
    seen: list[Any] = []
    cancelled: list[bool] = []
    refused: list[str] = []

    async def polite(job: Job) -> None:
        seen.append((job.resume_from, job.deadline_s))
        if job.resume_from is not None:
            return
        try:
            job.handback()
        except RuntimeError as exc:
            refused.append(str(exc))
        try:
            await job.stopping
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        assert 4.0 < job.deadline_s <= 5.0
        await job.checkpoint({"i": 7})
        job.handback()

    async def main() -> Rig:
        rig = Rig(polite)
        rig.pool.start(FakeMsg("o-1"))
        await asyncio.sleep(0.05)
        rig.pipeline.stopping.set(time.monotonic() + 5.0)
        await rig.until_idle()
        rig.pipeline.stopping = StopSignal()  # the next worker, not stopping
        rig.pool.start(FakeMsg("o-1", delivered=2))
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert not cancelled and refused and "job.stopping" in refused[0]
    assert seen[0] == (None, math.inf) and seen[1][0] == {"i": 7}
    assert rig.pipeline.handed_back_by_handlers == 1
    record = rig.t.records["o-1"]
    assert (record.status, record.handbacks, record.attempts) == ("done", 1, 0)
    assert ("handed_back", "o-1") in rig.hooks.events


@pytest.mark.parametrize(
    ("state", "message"),
    [({"f": object()}, "not JSON-serialisable"), ({"x": "y" * 70_000}, "over the 65536-byte limit")],
)
def test_a_bad_checkpoint_raises_inside_the_handler_and_the_job_carries_on(state: Any, message: str) -> None:
    errors: list[str] = []

    async def handler(job: Job) -> None:
        try:
            await job.checkpoint(state)
        except CheckpointError as exc:
            errors.append(str(exc))

    rig = run_one(handler)
    assert len(errors) == 1 and message in errors[0]
    assert rig.t.ops() == ["put:done", "ack"]


def test_a_failing_handler_is_a_failed_attempt_with_its_error() -> None:
    async def boom(job: Job) -> None:
        raise RuntimeError("card declined")

    rig = run_one(boom)
    record = rig.t.records["o-1"]
    assert (record.status, record.attempts, record.error) == ("queued", 1, "RuntimeError: card declined")
    assert rig.t.ops()[-1] == "nak"


def test_a_run_record_lost_in_a_failover_is_written_again_and_costs_the_job_no_attempt() -> None:
    """Found on a 3-node cluster's rolling restart: the `done` run record of a finished job lost its
    PubAck with the connection; the handler failed, and the retry ran the finished job again."""

    async def finishes(job: Job) -> None:
        await job.record_progress("start", 0.0, 1.0)
        await job.record_progress("done", 1.0, 1.0)

    async def main() -> Rig:
        rig = Rig(finishes)
        rig.t.fail_runs = 2
        rig.pool.start(FakeMsg("o-1"))
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert [r.event for r in rig.t.runs] == ["start", "done"]
    assert rig.t.ops() == ["put:done", "ack"]
    assert rig.t.records["o-1"].attempts == 0


def test_a_lease_lost_in_a_failover_is_written_again_and_costs_the_job_no_attempt() -> None:
    """Found on a 3-node cluster's rolling restart: a redelivery's confirmed lease lost its PubAck
    with the connection; the slot died of it, a failed attempt, and the order ran as attempt 2."""

    async def main() -> Rig:
        rig = Rig(noop)
        rig.t.records["o-1"] = contract.StatusRecord("o-1", "queued", handbacks=1)
        rig.t.fail_puts = 2
        rig.pool.start(FakeMsg("o-1", delivered=2))
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert rig.t.ops() == ["get", "in_progress", "put:processing", "put:done", "ack"]
    assert (rig.t.records["o-1"].status, rig.t.records["o-1"].attempts) == ("done", 0)


def test_a_re_lease_that_fails_during_a_recovery_is_not_retried_over_the_runs_done() -> None:
    """Found on a 3-node cluster's rolling restart: a recovery's re-lease, retried through the
    failover, landed after the run's `done` and left the order `processing` for good."""

    async def main() -> Rig:
        finish = asyncio.Event()

        async def waits(job: Job) -> None:
            await finish.wait()

        rig = Rig(waits)
        rig.pool.start(FakeMsg("o-1"))
        await asyncio.sleep(0.01)
        rig.t.fail_puts = 1  # the re-lease's write is lost in the failover
        recovering = asyncio.create_task(rig.pipeline.recover())
        await asyncio.sleep(0.01)
        finish.set()
        await rig.until_idle()
        await recovering
        await asyncio.sleep(0.5)  # a retry of the re-lease would have come by now
        return rig

    rig = asyncio.run(main())
    assert rig.t.records["o-1"].status == "done"


def test_a_cancelled_error_from_inside_the_handler_is_a_failure_not_a_stop() -> None:
    async def handler(job: Job) -> None:
        raise asyncio.CancelledError

    assert run_one(handler).t.records["o-1"].error == "CancelledError raised inside the handler"


def test_the_hard_timeout_stops_the_job_as_a_failed_attempt() -> None:
    async def slow(job: Job) -> None:
        await asyncio.sleep(10)

    rig = run_one(slow, timeout_s=0.1, ticking=True)
    record = rig.t.records["o-1"]
    assert (record.attempts, record.error) == (1, "timed out after 0.1s")
    # stopped at its deadline, not after its 10 s; counted as a timeout; naked with its backoff
    assert record.run_s is not None and record.run_s < 1.0
    assert rig.hooks.events == [("started", "o-1"), ("timeout", "o-1")]
    assert rig.t.ops() == ["put:queued", "nak"] and record.retry_at is not None


def test_a_redelivery_of_a_running_job_is_adopted_not_run_twice() -> None:
    runs: list[int] = []
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        runs.append(job.delivery)
        await release.wait()

    async def main() -> Rig:
        rig = Rig(handler)
        rig.pool.start(FakeMsg("o-1", seq=7))
        await asyncio.sleep(0.01)
        rig.pool.start(FakeMsg("o-1", seq=7, delivered=2))
        await asyncio.sleep(0.01)
        release.set()
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert runs == [1]
    assert ("adopted", "o-1") in rig.hooks.events
    assert rig.t.records["o-1"].deliveries == 2


def test_a_redelivery_with_no_record_waits_its_grace_then_counts_a_crash() -> None:
    rig = run_one(noop, msg=FakeMsg("o-1", delivered=2))
    assert rig.t.ops()[:3] == ["get", "in_progress", "get"]
    assert rig.t.records["o-1"].crashes == 1
    assert ("crash", "o-1") in rig.hooks.events


def test_a_redelivery_whose_holder_re_leases_within_the_grace_is_deferred() -> None:
    import time

    async def main() -> Rig:
        rig = Rig(noop, timing=fast_timing(orphan_grace_s=0.2))
        rig.pool.start(FakeMsg("o-1", delivered=2))
        await asyncio.sleep(0.05)
        # the holder reconnects and writes its lease
        rig.t.records["o-1"] = contract.StatusRecord(
            "o-1", "processing", worker_id="x", lease_until=time.time() + 5
        )
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    assert rig.t.ops()[-1] == "nak"
    assert rig.hooks.events == [("running_elsewhere", "o-1")]


def test_a_slot_that_dies_of_a_base_exception_is_a_failed_attempt_and_the_message_goes_back() -> None:
    class Escape(BaseException):
        pass

    async def handler(job: Job) -> None:
        raise Escape

    rig = run_one(handler)
    assert ("crashed", "slot") in rig.hooks.events
    assert rig.t.ops()[-2:] == ["put:queued", "nak"]
    assert rig.t.calls[-1][2] <= 1.0
    assert rig.pool.free_slots == 4


def test_crashed_slots_are_counted_restarted_and_serve_again(caplog: pytest.LogCaptureFixture) -> None:
    """Three handlers escape with a BaseException beside a normal order on 4 slots: each crash is
    counted (orderflow_slot_restarts_total{kind="slot"}), logged, a failed attempt whose message
    goes back; the pool keeps its 4 slots and runs the next orders to done."""

    class Escape(BaseException):
        pass

    async def handler(job: Job) -> None:
        if job.order.order_id.startswith("crash"):
            raise Escape

    metrics = WorkerMetrics(CollectorRegistry())

    async def main() -> Rig:
        rig = Rig(handler, extra_hooks=(MetricsHook(metrics, "default"),))
        for seq, order_id in enumerate(("crash-0", "crash-1", "crash-2", "ok-0"), start=1):
            rig.pool.start(FakeMsg(order_id, seq=seq))
        await rig.until_idle()
        for i in range(1, 5):
            rig.pool.start(FakeMsg(f"ok-{i}", seq=4 + i))
        await rig.until_idle()
        return rig

    with caplog.at_level(logging.ERROR, logger="worker.job"):
        rig = asyncio.run(main())
    assert metrics.registry.get_sample_value("orderflow_slot_restarts_total", {"kind": "slot"}) == 3
    assert sum("slot crashed" in r.getMessage() for r in caplog.records) == 3
    crashed = [rig.t.records[f"crash-{i}"] for i in range(3)]
    assert [(r.status, r.attempts) for r in crashed] == [("queued", 1)] * 3
    assert all(rig.t.records[f"ok-{i}"].status == "done" for i in range(5))
    assert rig.pool.free_slots == 4


def test_recovery_re_leases_every_running_job_at_once() -> None:
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        await release.wait()

    async def main() -> Rig:
        rig = Rig(handler)
        for i in range(3):
            rig.pool.start(FakeMsg(f"o-{i}", seq=i + 1))
        await asyncio.sleep(0.01)
        await rig.pipeline.recover()
        release.set()
        await rig.until_idle()
        return rig

    rig = asyncio.run(main())
    confirmed = [c for c in rig.t.calls if c[0] == "put" and c[2] == ("processing", True)]
    assert len(confirmed) == 3


def test_an_undecodable_message_goes_to_the_dlq_under_its_subjects_id_without_a_run() -> None:
    ran: list[str] = []

    async def handler(job: Job) -> None:
        ran.append(job.order.order_id)

    rig = run_one(
        handler, msg=FakeMsg("junk-1", data=b"\x00not an order", headers={contract.H_MSG_ID: "a b*"})
    )
    assert ran == [] and rig.t.ops() == ["publish", "put:failed", "term"]
    subject, _, headers = rig.t.published[0]
    assert subject == "dlq.orders.default.junk-1" and headers[contract.H_REASON] == "undecodable"
    assert ("undecodable", "junk-1") not in rig.hooks.events and ("poison", "junk-1") in rig.hooks.events
    record = rig.t.records["junk-1"]  # failed with the reason, one attempt: never retried
    assert record.status == "failed" and "undecodable" in (record.error or "") and record.attempts == 1
