"""The timeline of `orderflow status ID --timeline/--png` from recorded run records, in process: runs
paired from their records on a shared time axis, a cut run bounded by the next start, a running one
drawn to now, and a PNG whose time axis is the records' UTC times (tests/tracing/test_one_trace.py
draws a real order's runs on three workers through the CLI)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib import dates, image

from orderflow.contract import RunRecord
from orderflow_tools import timeline

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def rec(event: str, pod: str, at_s: float, progress_s: float, attempt: int = 1) -> RunRecord:
    return RunRecord("o-1", event, pod, attempt, T0 + at_s, progress_s, 10.0)


RECORDS = [
    rec("start", "pod-a", 0.0, 0.0),
    rec("interrupted", "pod-a", 4.0, 4.0),  # handed back at a scale-down, checkpoint at 4 s
    rec("start", "pod-b", 5.0, 4.0),  # resumed from it, then SIGKILLed: no end record
    rec("start", "pod-c", 20.0, 4.0),
    rec("done", "pod-c", 26.0, 10.0),
]


def test_text_draws_each_run_on_one_time_axis_with_its_outcome() -> None:
    out = timeline.text("o-1", timeline.runs_of(RECORDS)).splitlines()
    assert out[0] == "order o-1: 3 run(s) from 2027-01-15T08:00:00.000Z to 2027-01-15T08:00:26.000Z (26.0s)"
    a, b, c = out[1:]
    assert a.startswith("pod-a |" + "=" * 7 + " " * 41 + "|")  # 0-4 s of 26 s: 7 of 48 columns
    assert "+   0.00s +   4.00s  handed back     0.0s→4.0s of 10.0s" in a
    assert b.startswith("pod-b |" + " " * 9 + "-" * 28 + " " * 11 + "|")  # cut: up to pod-c's start
    assert "+   5.00s +  20.00s  no end record   from 4.0s of 10.0s resumed from checkpoint" in b
    assert c.startswith("pod-c |" + " " * 37 + "=" * 11 + "|")
    assert "+  20.00s +  26.00s  done            4.0s→10.0s of 10.0s resumed from checkpoint" in c


def test_a_run_without_an_end_is_drawn_to_now_and_no_runs_say_so() -> None:
    out = timeline.text("o-1", timeline.runs_of(RECORDS[:1]), now=T0 + 3.0).splitlines()
    assert "+   0.00s +   3.00s  running or lost" in out[1]
    assert timeline.text("o-2", []) == "order o-2: no runs recorded in ORDER_RUNS"


def test_png_has_a_time_axis_in_utc_and_one_row_per_pod(tmp_path: Path) -> None:
    path = tmp_path / "o-1.png"
    runs = timeline.runs_of(RECORDS)
    timeline.png("o-1", runs, str(path))
    pixels = image.imread(path)
    assert pixels.shape[1] == 1000 and pixels.shape[0] == 270  # 10 x (1.2 + 0.5 per pod) in at 100 dpi
    assert not plt.get_fignums()  # the figure is closed
    fig = timeline.figure("o-1", runs)
    try:
        [ax] = fig.axes
        left, right = (dates.num2date(x, tz=UTC) for x in ax.get_xlim())  # type: ignore[no-untyped-call]
        assert left <= datetime.fromtimestamp(T0, UTC) and right >= datetime.fromtimestamp(T0 + 26, UTC)
        assert (right - left).total_seconds() < 26 * 1.2  # the axis spans the runs, not a made-up scale
        # one bar per run, at its true start and length (matplotlib dates are days)
        t0 = dates.date2num(datetime.fromtimestamp(T0, UTC))  # type: ignore[no-untyped-call]
        bars = [c.get_paths()[0].get_extents().bounds for c in ax.collections]  # x, y, width, height
        assert [round((x - t0) * 86400, 3) for x, _, _, _ in bars] == [0.0, 5.0, 20.0]
        assert [round(w * 86400, 3) for _, _, w, _ in bars] == [4.0, 15.0, 6.0]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["pod-a", "pod-b", "pod-c"]
    finally:
        plt.close(fig)
