"""The rehearsal's figures from its records: work redone from the run records (chaos/work.py), the
dead letters by rule and hand-backs per order (chaos/ledger.py), scale-down victims per half of the
sine. Pure functions, no processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from orderflow.contract import RunRecord, StatusRecord
from orderflow_tools.chaos.ledger import dead_letters, per_order
from orderflow_tools.chaos.procs import Drain, deadline_of, drain_of
from orderflow_tools.chaos.rehearsal import victim_figures
from orderflow_tools.chaos.work import order_runs, per_second, spread, tally, waits
from worker import drainreport

LENGTH = 60.0


def rec(event: str, worker: str, at: float, progress: float | None = None) -> RunRecord:
    return RunRecord("o-1", event, worker, 1, at, progress, LENGTH)


def test_a_hand_back_that_checkpoints_while_it_unwinds_redoes_nothing() -> None:
    runs = order_runs(
        [
            rec("start", "w1", 100, 0),
            rec("interrupted", "w1", 120, 20),
            rec("start", "w2", 120.5, 20),
            rec("done", "w2", 160.5, LENGTH),
        ],
        {},
    )
    assert [(r.start_s, r.end_s, r.ended_by, r.redone_s) for r in runs] == [
        (0, 20, "interrupted", 0),
        (20, LENGTH, "done", 0),
    ]
    w = tally({"o-1": runs})
    assert (w.job_s, w.ran_s, w.redone_s, w.share, w.resumed_runs) == (LENGTH, LENGTH, 0, 0, 1)


def test_without_checkpoints_every_run_redoes_what_the_runs_before_it_did() -> None:
    """1. Runs 0-20 s, handed back. 2. Starts over, runs to 30 s, handed back: 20 s redone.
    3. Starts over and finishes: 30 s redone. 50 s redone of a 60 s job."""
    runs = order_runs(
        [
            rec("start", "w1", 100, 0),
            rec("interrupted", "w1", 120, 20),
            rec("start", "w2", 121, 0),
            rec("interrupted", "w2", 151, 30),
            rec("start", "w3", 152, 0),
            rec("done", "w3", 212, LENGTH),
        ],
        {},
    )
    assert [r.redone_s for r in runs] == [0, 20, 30]
    assert [r.cause for r in runs] == ["", "handback", "handback"]
    w = tally({"o-1": runs})
    assert (w.redone_s, w.ran_s, round(w.share, 3)) == (50, 110, 0.833)
    assert w.redone_by_cause == {"handback": 50}


def test_a_sigkilled_run_ends_at_the_kill_and_its_successor_redoes_since_the_checkpoint() -> None:
    """The worker w1 is killed 25.5 s into a run that resumed from 10 s (so it got to 35.5 s); the
    next run resumes from the checkpoint at 34 s and redoes 1.5 s. w1's container restarts and
    runs another order later: only the kill right after the start counts."""
    runs = order_runs(
        [
            rec("start", "w1", 100, 10),
            rec("start", "w2", 140, 34),
            rec("done", "w2", 166, LENGTH),
        ],
        {"w1": [90.0, 125.5, 300.0]},
    )
    assert [(r.ended_by, r.end_s) for r in runs] == [("killed", 35.5), ("done", LENGTH)]
    assert runs[1].redone_s == 1.5 and runs[1].cause == "crash"
    # the same worker id runs the order again after its container restarted
    again = order_runs(
        [rec("start", "w1", 100, 0), rec("start", "w1", 140, 0), rec("done", "w1", 200, LENGTH)],
        {"w1": [110.0]},
    )
    assert [(r.ended_by, r.end_s, r.redone_s) for r in again] == [("killed", 10, 0), ("done", LENGTH, 10)]


def test_a_run_whose_end_record_was_lost_is_bounded_by_the_next_start_or_counted_unended() -> None:
    runs = order_runs([rec("start", "w1", 100, 0), rec("start", "w2", 105, 0)], {})
    assert [(r.ended_by, r.end_s) for r in runs] == [("unrecorded", 5), ("unended", 0)]
    w = tally({"o-1": runs})
    assert (w.unrecorded_runs, w.unended_runs, w.redone_s) == (1, 1, 0)


def test_the_picture_gets_each_runs_redone_part_first_then_its_new_work_second_by_second() -> None:
    runs = order_runs(
        [
            rec("start", "w1", 1000.0, 0),
            rec("interrupted", "w1", 1002.0, 2),
            rec("start", "w2", 1002.5, 0),
            rec("done", "w2", 1062.5, LENGTH),
        ],
        {},
    )
    seconds = per_second(runs, wall0=1000.0)
    assert seconds[0] == (1.0, 0.0) and seconds[1] == (1.0, 0.0)
    assert seconds[2] == (0.0, 0.5) and seconds[3] == (0.0, 1.0) and seconds[4] == (0.5, 0.5)
    assert round(sum(r for _, r in seconds.values()), 6) == 2.0
    assert round(sum(n for n, _ in seconds.values()), 6) == LENGTH


def status(
    order_id: str, state: str, attempts: int = 0, crashes: int = 0, handbacks: int = 0
) -> StatusRecord:
    return StatusRecord(order_id, state, attempts, crashes=crashes, handbacks=handbacks)


def test_dead_letters_are_sorted_by_the_rule_that_sent_them_and_hand_backs_counted_per_order() -> None:
    records = {
        "a": status("a", "dead", attempts=5),
        "b": status("b", "dead", crashes=3),
        "c": status("c", "dead", handbacks=100),  # no rule called for it
        "d": status("d", "done", handbacks=4),
        "e": status("e", "done", handbacks=1, crashes=1),
    }
    assert dead_letters(records, max_deliver=5, max_crashes=3) == {
        "after_failures": 1,
        "after_crashes": 1,
        "without_failure": 1,
    }
    assert per_order({"d", "e", "f"}, records, "handbacks") == {
        "max": 4,
        "mean": round(5 / 3, 3),
        "orders": 2,
        "total": 5,
    }


def victim(half: str, running: int | None, handed_back: int, in_flight: float = 0) -> dict[str, Any]:
    return {
        "reason": "scale_down",
        "half": half,
        "running": running,
        "handed_back": handed_back,
        "in_flight": in_flight,
    }


def test_victims_are_idle_when_they_ran_nothing_at_sigterm_split_by_the_half_of_the_sine() -> None:
    victims = [
        victim("falling", 0, 0),
        victim("falling", 0, 0),
        victim("falling", 3, 2),
        victim("falling", None, 0, in_flight=0),  # no drain line: its last scrape decides
        victim("rising", 5, 5),
        {**victim("falling", 9, 9), "reason": "evict"},
    ]
    v = victim_figures(victims, "scale_down")
    assert v["falling"] == {
        "victims": 4,
        "idle": 3,
        "idle_share": 0.75,
        "handed_back": 2,
        "handed_back_per_victim": 0.5,
    }
    assert v["rising"]["idle_share"] == 0 and v["after_load"]["idle_share"] is None
    assert v["all"]["victims"] == 5


def test_the_wait_to_run_again_is_measured_from_a_hand_back_and_from_a_kill() -> None:
    """Issue #25: a hand-back's order runs again 0.5 s after its `interrupted` record; a run whose
    worker was killed (a grace-period SIGKILL at 150) waits for its lease and ack_wait: 12 s."""
    runs = {
        "o-1": order_runs(
            [
                rec("start", "w1", 100, 0),
                rec("interrupted", "w1", 120, 20),
                rec("start", "w2", 120.5, 20),
                rec("start", "w3", 162, 50),
                rec("done", "w3", 172, LENGTH),
            ],
            {"w2": [150.0]},
        ),
        "o-2": order_runs(
            [RunRecord("o-2", "start", "w1", 1, 100, 0, 10), RunRecord("o-2", "done", "w1", 1, 110, 10, 10)],
            {},
        ),
    }
    assert waits(runs) == {"handback": [0.5], "crash": [12.0]}
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"count": 4, "p50_s": 3.0, "p95_s": 10.0, "max_s": 10.0}
    assert spread([])["count"] == 0


def test_a_drain_s_report_gives_its_deadline_and_every_hand_back(tmp_path: Path) -> None:
    """The rehearsal reads what a worker's drain did from its drain report (worker/drainreport.py,
    chaos/procs.py), never from a log line: the deadline that ruled and why, and its hand-backs at
    the deadline plus those its handlers made. A drain killed before its end left only its start."""
    path = tmp_path / "worker-1.drain.json"
    assert drainreport.read(path) is None  # no drain began
    started = drainreport.DrainReport(
        event="draining",
        worker_id="worker-1",
        running_at_sigterm=3,
        deadline_s=4.0,
        ruled_by="pod",
        why="pod deleted with a 5s grace, SIGKILL in 4.9s, DisruptionTarget EvictionByEvictionAPI",
    )
    drainreport.write(path, started)
    killed = drainreport.read(path)
    assert drain_of(killed) is None
    found = deadline_of(killed)
    assert found is not None and (found["drain_s"], found["ruled_by"]) == (4.0, "pod")
    assert "DisruptionTarget EvictionByEvictionAPI" in str(found["why"])
    ended = msgspec.structs.replace(
        started,
        event="drained",
        drained_in_s=3.7,
        handed_back_at_deadline=1,
        unstarted=0,
        handed_back_by_handlers=2,
    )
    drainreport.write(path, ended)
    assert drain_of(drainreport.read(path)) == Drain(3, 3, 0, 2)
    path.write_bytes(b'{"event": "drai')  # torn by a SIGKILL mid-write
    assert drainreport.read(path) is None
