"""`orderflow report DIR`: draw a recorded load run (see `orderflow load`) as PNGs in DIR.

requests_by_status.png  answers per second by HTTP status (k6's view)
accepted_vs_done.png    orders stored vs jobs done per second, and cumulatively: the queue absorbing the peak
latency.png             POST /orders latency p50/p90/p99 over time
queue_depth.png         orders waiting; running and capacity (workers x slots) on a right axis
overview.png            requests by status over accepted vs done (over the queue depth, if any)
figures.json            peak RPS, answers by status, backlog peak, drain time; what was not drawn and why

Each title states the setup (scenario, mode, peak RPS, workers x slots, work time, as far as the
run recorded them) and each picture its source. A picture whose data was not recorded is not
drawn; the report says which and why (e.g. NATS did not answer, no worker metrics were sampled).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderflow_tools.commands import command
from orderflow_tools.load_series import Run, figures, load_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STATUS_COLORS = {"200": "tab:green", "400": "tab:orange", "500": "tab:red", "503": "tab:purple", "0": "black"}
PNGS = ("requests_by_status.png", "accepted_vs_done.png", "latency.png", "queue_depth.png", "overview.png")
# What each picture needs (Run.missing keys): every one of `all`, and at least one of `any`.
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "requests_by_status.png": (("requests",), ()),
    "latency.png": (("requests",), ()),
    "accepted_vs_done.png": ((), ("accepted", "done")),
    "queue_depth.png": (("queue",), ()),
    "overview.png": (("requests",), ("accepted", "done")),
}


def add_parser(subparsers: Any) -> None:
    """Register `report` on the CLI's subparsers."""
    p = command(subparsers, "report", "draw a recorded load run as PNGs", __doc__)
    p.add_argument("dir", type=Path, help="run directory written by `orderflow load`")
    p.add_argument("--title", default=None, help="figure title prefix (default: scenario and mode)")
    p.set_defaults(func=run)


def setup_title(run: Run) -> str:
    """scenario · mode · peak RPS · workers x slots · work time, as far as the run knows them."""
    m = run.meta
    setup = m.get("setup") or {}
    parts = [m.get("scenario"), m.get("mode") and f"{m['mode']} mode"]
    peak = max((sum(vals) for vals in zip(*(v for _, v in run.by_status.values()), strict=True)), default=0)
    if peak:
        parts.append(f"peak {peak:.0f} RPS")
    workers, slots = setup.get("workers"), setup.get("slots_per_worker")
    plural = "worker" if workers == 1 else "workers"
    if m.get("mode") == "direct":
        # The ingest does the work inside the request; the workers (if any run) get none of it.
        if setup.get("work_s"):
            parts.append(f"work {setup['work_s']} s inline")
        return " · ".join(str(p) for p in parts if p)
    if workers and slots:
        parts.append(f"{workers} {plural} x {slots} slots")
    elif workers:
        parts.append(f"{workers} {plural}")
    if setup.get("work_s"):
        parts.append(f"work {setup['work_s']} s")
    return " · ".join(str(p) for p in parts if p) or run.directory.name


def _title(run: Run, title: str | None) -> str:
    return title or setup_title(run)


def _mark_load_end(ax: Axes, run: Run) -> None:
    if run.k6_end is not None:
        ax.axvline(run.k6_end, color="grey", linestyle=":", linewidth=1, label="load ends")


def _finish(ax: Axes, ylabel: str, right: Axes | None = None) -> None:
    ax.set_ylabel(ylabel)
    ax.set_xlabel("seconds since start")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:  # one legend for both axes
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        # Beside the plot, never over the data (nor over a right axis' tick labels).
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.08 if right is not None else 1.01, 1.0),
            borderaxespad=0.0,
            fontsize="small",
        )


def queue_source_text(run: Run) -> str:
    if run.queue_source == "nats":
        interval = run.meta.get("nats_interval_s") or 1.0
        return f"consumer state read from NATS every {interval:g} s"
    interval = run.meta.get("consumer_info_interval_s")
    every = (
        f"every {interval:g} s"
        if interval
        else "every few seconds (ORDERFLOW_CONSUMER_INFO_INTERVAL_S, 5 s by default)"
    )
    return f"the workers' orderflow_consumer_pending, refreshed only {every}: it moves in steps"


def plot_requests(ax: Axes, run: Run) -> None:
    for status, (xs, ys) in run.by_status.items():
        ax.plot(xs, ys, label=status, color=STATUS_COLORS.get(status), linewidth=1.2)
    _mark_load_end(ax, run)
    ax.set_title("POST /orders answered per second, by status (k6)", fontsize="medium")
    _finish(ax, "requests/s")


def plot_accepted_vs_done(ax: Axes, run: Run, cumulative: bool = False) -> None:
    accepted = run.accepted_total if cumulative else run.accepted_rate
    done = run.done_total if cumulative else run.done_rate
    if accepted[0]:
        ax.plot(*accepted, label=f"accepted ({run.accepted_source})", color="tab:blue", linewidth=1.2)
    if done[0]:
        ax.plot(*done, label=f"done ({run.done_source})", color="tab:green", linewidth=1.2)
    _mark_load_end(ax, run)
    lacking = [f"{what}: not recorded" for what in ("accepted", "done") if what in run.missing]
    suffix = f" ({'; '.join(lacking)})" if lacking else ""
    if cumulative:
        ax.set_title("orders accepted vs done, cumulative: the gap is the queue" + suffix, fontsize="medium")
        _finish(ax, "orders")
    else:
        ax.set_title("orders accepted vs done per second" + suffix, fontsize="medium")
        _finish(ax, "orders/s")


def plot_latency(ax: Axes, run: Run) -> None:
    for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        xs, ys = run.latency.get(name, ([], []))
        if xs:
            ax.plot(xs, ys, style, label=name, linewidth=1.2)
    _mark_load_end(ax, run)
    ax.set_title("POST /orders latency (k6, 2 s bins)", fontsize="medium")
    _finish(ax, "ms")


def plot_queue(ax: Axes, run: Run) -> Axes | None:
    """Waiting on the left axis; running and the capacity line (workers x slots) on a right axis of
    their own: a backlog of thousands would flatten a running line bounded by the slots. Returns
    the right axis when there is one."""
    ax.plot(*run.pending, label="waiting (not yet delivered)", color="tab:orange", linewidth=1.2)
    right = None
    if run.ack_pending[0] or run.capacity:
        right = ax.twinx()
        if run.ack_pending[0]:
            right.plot(
                *run.ack_pending,
                label="running (delivered, not acked; right axis)",
                color="tab:cyan",
                linewidth=1.2,
            )
        if run.capacity:
            right.axhline(
                run.capacity,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label=f"capacity: {run.capacity_source} (right axis)",
            )
        right.set_ylim(bottom=0, top=max([*run.ack_pending[1], run.capacity or 0, 1]) * 1.15)
        right.set_ylabel("orders running")
    _mark_load_end(ax, run)
    ax.set_title(f"queue depth — {queue_source_text(run)}", fontsize="medium")
    _finish(ax, "orders waiting", right)
    return right


def not_drawn(run: Run) -> dict[str, str]:
    """{png: why} for the pictures the run has no data for."""
    out = {}
    for png, (every, some) in NEEDS.items():
        lacking = [run.missing[n] for n in every if n in run.missing]
        if some and all(n in run.missing for n in some):
            lacking += [run.missing[n] for n in some]
        if lacking:
            out[png] = "; ".join(dict.fromkeys(lacking))
    return out


def overview(plt: Any, run: Run) -> Any:
    """Requests by status over accepted vs done, and the queue depth with its capacity line when
    the run has a queue (direct mode queues nothing: no empty panel)."""
    with_queue = "queue" not in run.missing
    fig, axes = plt.subplots(3 if with_queue else 2, 1, figsize=(11, 10 if with_queue else 7), sharex=True)
    plot_requests(axes[0], run)
    plot_accepted_vs_done(axes[1], run)
    if with_queue:
        plot_queue(axes[2], run)
    for ax in axes[:-1]:
        ax.set_xlabel("")
    return fig


def draw(run: Run, title: str | None = None) -> list[Path]:
    # matplotlib is slow to import: load it only when drawing, so the `orderflow` CLI starts fast.
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    name = _title(run, title)
    skip = not_drawn(run)
    written = []

    def save(fig: Any, filename: str) -> None:
        fig.suptitle(name)
        fig.tight_layout()
        path = run.directory / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def single(filename: str, plot: Any) -> None:
        if filename not in skip:
            fig, ax = plt.subplots(figsize=(11, 4))
            plot(ax, run)
            save(fig, filename)

    single("requests_by_status.png", plot_requests)
    if "accepted_vs_done.png" not in skip:
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
        plot_accepted_vs_done(a1, run)
        plot_accepted_vs_done(a2, run, cumulative=True)
        a1.set_xlabel("")
        save(fig, "accepted_vs_done.png")
    single("latency.png", plot_latency)
    single("queue_depth.png", plot_queue)
    if "overview.png" not in skip:
        save(overview(plt, run), "overview.png")
    return written


def run(args: argparse.Namespace) -> int:
    """Handler of `orderflow report`."""
    directory: Path = args.dir
    if not (directory / "k6.json").exists() and not (directory / "metrics.jsonl").exists():
        print(f"{directory}: no k6.json or metrics.jsonl (record one with `orderflow load`)", file=sys.stderr)
        return 2
    recorded = load_run(directory)
    skip = not_drawn(recorded)
    for png in skip:
        (directory / png).unlink(missing_ok=True)  # a stale picture of an earlier report
    try:
        paths = draw(recorded, args.title)
    except ImportError:
        print(
            "orderflow report needs matplotlib: pip install matplotlib (`make run` installs it)",
            file=sys.stderr,
        )
        return 2
    for path in paths:
        print(path)
    for png, why in skip.items():
        print(f"not drawn: {directory / png}: {why}", file=sys.stderr)
    numbers = figures(recorded)
    numbers["setup"] = setup_title(recorded)
    numbers["sources"] = {
        "accepted": recorded.accepted_source or None,
        "done": recorded.done_source or None,
        "queue": queue_source_text(recorded) if recorded.queue_source else None,
    }
    numbers["not_drawn"] = skip
    (directory / "figures.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps(numbers))
    return 0
