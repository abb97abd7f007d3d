"""`orderflow status ID --timeline` / `--png FILE`: an order's runs drawn from its ORDER_RUNS records.

The runs are paired from the records as the chaos ledger pairs them (orderflow_tools/chaos/work.py):
a `start` (with the progress it resumed from: its checkpoint) and its end record (`done`,
`interrupted`: handed back, `error`: a failed attempt). A run with no end record that a later run
followed was cut without one (a SIGKILL, a lost record): it is drawn up to that later start and
marked `no end record`. The last run with no end record is still running, or its pod died: drawn up
to now. Checkpoints show as the progress each run resumed from and reached (`2.0s→4.0s of 10.0s`):
the records carry a run's start and end progress, not every checkpoint between.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from orderflow.contract import RunRecord
from orderflow_tools.chaos.work import Run, order_runs

BAR_WIDTH = 48
OUTCOMES = {
    "done": "done",
    "interrupted": "handed back",
    "error": "failed attempt",
    "unrecorded": "no end record",
    "unended": "running or lost",
    "killed": "killed",
}
COLOURS = {
    "done": "tab:green",
    "interrupted": "tab:blue",
    "error": "tab:red",
    "unrecorded": "tab:grey",
    "unended": "tab:orange",
    "killed": "tab:grey",
}


def runs_of(records: Sequence[RunRecord]) -> list[Run]:
    return order_runs(records, {})


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _end(run: Run, now: float) -> float:
    return run.end_at if run.end_at is not None else max(now, run.start_at)


def _progress(r: Run) -> str:
    """Where the run resumed from and got to; a run without an end record only where it began
    (how far it got before it was cut is not recorded)."""
    if not r.length_s:
        return ""
    if r.ended_by in ("unended", "unrecorded", "killed"):
        return f"from {r.start_s:.1f}s of {r.length_s:.1f}s"
    return f"{r.start_s:.1f}s→{r.end_s:.1f}s of {r.length_s:.1f}s"


def text(order_id: str, runs: Sequence[Run], now: float | None = None) -> str:
    """One line per run: its pod, a bar on a shared time axis, start/end offsets, outcome, progress."""
    if not runs:
        return f"order {order_id}: no runs recorded in ORDER_RUNS"
    now = time.time() if now is None else now
    t0 = min(r.start_at for r in runs)
    t1 = max(_end(r, now) for r in runs)
    span = max(t1 - t0, 1e-3)
    pod_w = max(len(r.worker_id) for r in runs)
    lines = [f"order {order_id}: {len(runs)} run(s) from {_iso(t0)} to {_iso(t1)} ({span:.1f}s)"]
    for r in runs:
        end = _end(r, now)
        a = round((r.start_at - t0) / span * BAR_WIDTH)
        b = max(a + 1, round((end - t0) / span * BAR_WIDTH))
        fill = "-" if r.ended_by in ("unended", "unrecorded") else "="
        bar = " " * a + fill * (b - a) + " " * (BAR_WIDTH - b)
        progress = _progress(r)
        resumed = " resumed from checkpoint" if r.start_s > 0 else ""
        lines.append(
            f"{r.worker_id:<{pod_w}} |{bar}| +{r.start_at - t0:7.2f}s +{end - t0:7.2f}s"
            f"  {OUTCOMES.get(r.ended_by, r.ended_by):<15} {progress}{resumed}".rstrip()
        )
    return "\n".join(lines)


def _num(mdates: Any, at: float) -> float:
    """Epoch seconds as matplotlib's date number (days), so the axis shows the records' UTC times."""
    return float(mdates.date2num(datetime.fromtimestamp(at, UTC)))


def png(order_id: str, runs: Sequence[Run], path: str, now: float | None = None) -> None:
    """The runs as bars per pod on a UTC time axis (matplotlib dates: the bars' lengths are true)."""
    import matplotlib.pyplot as plt

    fig = figure(order_id, runs, now)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def figure(order_id: str, runs: Sequence[Run], now: float | None = None) -> Any:
    """The matplotlib Figure of `png` (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever MPLBACKEND says
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    now = time.time() if now is None else now
    pods = list(dict.fromkeys(r.worker_id for r in runs))
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.5 * max(1, len(pods))))
    try:
        for r in runs:
            y = pods.index(r.worker_id)
            start = _num(mdates, r.start_at)
            end = _num(mdates, _end(r, now))
            ax.broken_barh(
                [(start, max(end - start, 1e-9))],
                (y - 0.3, 0.6),
                facecolors=COLOURS.get(r.ended_by, "tab:purple"),
                hatch="//" if r.ended_by in ("unended", "unrecorded") else None,
                edgecolor="black",
                linewidth=0.5,
            )
            label = f"{OUTCOMES.get(r.ended_by, r.ended_by)} {_progress(r)}".rstrip()
            ax.annotate(label, (start, y + 0.35), fontsize=8, va="bottom")
        ax.set_yticks(range(len(pods)), pods)
        ax.set_ylim(-0.7, len(pods) - 0.2)
        ax.xaxis_date(tz=UTC)
        clock = mdates.DateFormatter("%H:%M:%S", tz=UTC)  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_formatter(clock)
        ax.set_xlabel("time (UTC)")
        ax.set_title(f"order {order_id}: {len(runs)} run(s)")
        ax.grid(axis="x", linestyle=":")
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig
