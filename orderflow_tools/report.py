"""`orderflow report DIR`: draw a recorded load run (see `orderflow load`) as PNGs in DIR.

requests_by_status.png  answers per second by HTTP status (k6's view)
accepted_vs_done.png    orders stored vs jobs done per second, and cumulatively: the queue absorbing the peak
latency.png             POST /orders latency p50/p90/p99 over time
queue_depth.png         consumer pending and ack-pending (orderflow_consumer_pending)
overview.png            requests by status over accepted vs done, for docs
figures.json            peak RPS, answers by status, backlog peak, drain time
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orderflow_tools.load_series import Run, figures, load_run

if TYPE_CHECKING:
    from matplotlib.axes import Axes

STATUS_COLORS = {"200": "tab:green", "400": "tab:orange", "500": "tab:red", "503": "tab:purple", "0": "black"}
PNGS = ("requests_by_status.png", "accepted_vs_done.png", "latency.png", "queue_depth.png", "overview.png")


def add_parser(subparsers: Any) -> None:
    """Register `report` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "report",
        help="draw a recorded load run as PNGs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", type=Path, help="run directory written by `orderflow load`")
    p.add_argument("--title", default=None, help="figure title prefix (default: scenario and mode)")
    p.set_defaults(func=run)


def _title(run: Run, title: str | None) -> str:
    if title:
        return title
    parts = [run.meta.get("scenario"), run.meta.get("mode") and f"{run.meta['mode']} mode"]
    return " · ".join(str(p) for p in parts if p) or run.directory.name


def _mark_load_end(ax: Axes, run: Run) -> None:
    if run.k6_end is not None:
        ax.axvline(run.k6_end, color="grey", linestyle=":", linewidth=1, label="load ends")


def _finish(ax: Axes, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.set_xlabel("seconds since start")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small")


def plot_requests(ax: Axes, run: Run) -> None:
    for status, (xs, ys) in run.by_status.items():
        ax.plot(xs, ys, label=status, color=STATUS_COLORS.get(status), linewidth=1.2)
    if not run.by_status:
        ax.text(0.5, 0.5, "no k6 data", transform=ax.transAxes, ha="center")
    _mark_load_end(ax, run)
    ax.set_title("POST /orders answered per second, by status")
    _finish(ax, "requests/s")


def plot_accepted_vs_done(ax: Axes, run: Run, cumulative: bool = False) -> None:
    accepted = run.accepted_total if cumulative else run.accepted_rate
    done = run.done_total if cumulative else run.done_rate
    if not accepted[0] and not done[0]:
        ax.text(0.5, 0.5, "no orderflow metrics sampled", transform=ax.transAxes, ha="center")
    if accepted[0]:
        ax.plot(*accepted, label="accepted (stored)", color="tab:blue", linewidth=1.2)
    if done[0]:
        ax.plot(*done, label="done", color="tab:green", linewidth=1.2)
    _mark_load_end(ax, run)
    if cumulative:
        ax.set_title("orders accepted vs done, cumulative: the gap is the queue")
        _finish(ax, "orders")
    else:
        ax.set_title("orders accepted vs done per second")
        _finish(ax, "orders/s")


def plot_latency(ax: Axes, run: Run) -> None:
    for name, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        xs, ys = run.latency.get(name, ([], []))
        if xs:
            ax.plot(xs, ys, style, label=name, linewidth=1.2)
    _mark_load_end(ax, run)
    ax.set_title("POST /orders latency")
    _finish(ax, "ms")


def plot_queue(ax: Axes, run: Run) -> None:
    if run.pending[0]:
        ax.plot(*run.pending, label="pending (not yet delivered)", color="tab:orange", linewidth=1.2)
    if run.ack_pending[0]:
        ax.plot(*run.ack_pending, label="ack pending (running)", color="tab:cyan", linewidth=1.2)
    if not run.pending[0]:
        ax.text(0.5, 0.5, "no orderflow_consumer_pending sampled", transform=ax.transAxes, ha="center")
    _mark_load_end(ax, run)
    ax.set_title("queue depth (orderflow_consumer_pending)")
    _finish(ax, "messages")


def draw(run: Run, title: str | None = None) -> list[Path]:
    # matplotlib is a dev dependency and slow to import: load it only when drawing, so the
    # `orderflow` CLI starts fast and works without it.
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    name = _title(run, title)
    written = []

    def save(fig: Any, filename: str) -> None:
        fig.suptitle(name)
        fig.tight_layout()
        path = run.directory / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(9, 4))
    plot_requests(ax, run)
    save(fig, "requests_by_status.png")

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    plot_accepted_vs_done(a1, run)
    plot_accepted_vs_done(a2, run, cumulative=True)
    a1.set_xlabel("")
    save(fig, "accepted_vs_done.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    plot_latency(ax, run)
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(9, 4))
    plot_queue(ax, run)
    save(fig, "queue_depth.png")

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    plot_requests(a1, run)
    plot_accepted_vs_done(a2, run)
    a1.set_xlabel("")
    save(fig, "overview.png")
    return written


def run(args: argparse.Namespace) -> int:
    """Handler of `orderflow report`."""
    directory: Path = args.dir
    if not (directory / "k6.json").exists() and not (directory / "metrics.jsonl").exists():
        print(f"{directory}: no k6.json or metrics.jsonl (record one with `orderflow load`)", file=sys.stderr)
        return 2
    recorded = load_run(directory)
    try:
        paths = draw(recorded, args.title)
    except ImportError:
        print("orderflow report needs matplotlib: pip install matplotlib (the dev extra)", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    numbers = figures(recorded)
    (directory / "figures.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps(numbers))
    return 0
