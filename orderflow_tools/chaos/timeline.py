"""The rehearsal's timeline as one PNG: requests/s by status, the backlog, the worker pods, with
every SIGKILL, scale-down, hand-back and restart marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATUS_COLOURS = {"200": "tab:green", "503": "tab:orange", "0": "tab:red"}


def draw(
    path: Path,
    samples: Sequence[dict[str, Any]],
    answers: dict[int, dict[str, int]],
    events: Sequence[dict[str, Any]],
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_backlog, ax_pods) = plt.subplots(
        3, 1, figsize=(13, 9), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1.1]}
    )
    fig.suptitle(title, fontsize=11)

    # 1. requests/s by status (one second buckets of k6's answers, retries included)
    seconds = sorted(answers)
    statuses = sorted({s for bucket in answers.values() for s in bucket}, key=lambda s: (s != "200", s))
    for status in statuses:
        ys = [answers[t].get(status, 0) for t in seconds]
        ax_rps.plot(seconds, ys, lw=0.8, color=STATUS_COLOURS.get(status), label=f"{status or '?'}")
    ax_rps.set_ylabel("requests/s")
    ax_rps.legend(loc="upper right", fontsize=8, title="status (0 = no answer)", title_fontsize=8, ncol=4)

    ts = [s["t"] for s in samples]
    # 2. backlog: not yet delivered + delivered and not acknowledged (running or awaiting redelivery)
    ax_backlog.plot(ts, [s["pending"] for s in samples], lw=1, label="pending (not delivered)")
    ax_backlog.plot(ts, [s["ack_pending"] for s in samples], lw=1, label="ack pending (running)")
    ax_backlog.plot(
        ts, [s["slots"] for s in samples], lw=0.8, ls=":", color="grey", label="slots (ready pods)"
    )
    ax_backlog.set_ylabel("messages")
    ax_backlog.legend(loc="upper right", fontsize=8)

    # 3. pods
    ax_pods.step(ts, [s["desired"] for s in samples], where="post", lw=1.2, label="HPA desired")
    ax_pods.step(ts, [s["ready"] for s in samples], where="post", lw=1, label="ready")
    ax_pods.step(ts, [s["terminating"] for s in samples], where="post", lw=1, label="terminating (draining)")
    ax_pods.set_ylabel("worker pods")
    ax_pods.set_xlabel("seconds since start")
    top = max([s["desired"] for s in samples] + [1])
    marks = {
        "scale_down": ("v", "tab:blue", "scale-down (SIGTERM)"),
        "sigkill": ("x", "tab:red", "SIGKILL"),
        "grace_kill": ("X", "black", "SIGKILL at end of grace"),
        "handed_back": ("o", "tab:purple", "hand-backs at drain deadline"),
    }
    for kind, (marker, colour, label) in marks.items():
        xs = [e["t"] for e in events if e["kind"] == kind and e.get("count", 1)]
        if xs:
            y = top + 0.6 if kind != "handed_back" else top + 1.2
            ax_pods.scatter(xs, [y] * len(xs), marker=marker, color=colour, label=label, zorder=3)
            if kind == "handed_back":
                for e in events:
                    if e["kind"] == kind and e.get("count"):
                        ax_pods.annotate(
                            str(e["count"]),
                            (e["t"], y),
                            fontsize=7,
                            xytext=(3, 3),
                            textcoords="offset points",
                        )
    ax_pods.set_ylim(0, top + 2)
    for e in events:
        if e["kind"] in ("nats_restart", "ingest_restart", "load_end", "node_kill", "node_back"):
            style = {
                "nats_restart": ("tab:brown", "-"),
                "ingest_restart": ("tab:olive", "-"),
                "load_end": ("grey", "--"),
                "node_kill": ("tab:red", "-"),
                "node_back": ("tab:green", ":"),
            }[e["kind"]]
            for ax in (ax_rps, ax_backlog, ax_pods):
                ax.axvline(e["t"], color=style[0], ls=style[1], lw=1, alpha=0.8)
            ax_rps.annotate(
                e["kind"].replace("_", " "),
                (e["t"], 1),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
                color=style[0],
            )
    ax_pods.legend(loc="upper left", fontsize=8, ncol=4)
    for ax in (ax_rps, ax_backlog, ax_pods):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
