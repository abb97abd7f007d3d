"""The rehearsal's timeline as one PNG: requests/s by status, the backlog, the job time run each
second (new work, and work redone after a hand-back or a crash), the worker pods, with every
SIGKILL, scale-down (idle or busy victim), eviction, hand-back and restart marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATUS_COLOURS = {"200": "tab:green", "503": "tab:orange", "0": "tab:red"}
RPS_WINDOW_S = 10


def draw(
    path: Path,
    samples: Sequence[dict[str, Any]],
    answers: dict[int, dict[str, int]],
    events: Sequence[dict[str, Any]],
    title: str,
    work: dict[int, tuple[float, float]] | None = None,
    victims: Sequence[dict[str, Any]] = (),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_backlog, ax_work, ax_pods) = plt.subplots(
        4, 1, figsize=(13, 11.5), sharex=True, gridspec_kw={"height_ratios": [1, 1, 1, 1.1]}
    )
    fig.suptitle(title, fontsize=11)

    # 1. requests/s by status: k6's answers (retries included) per second, every second from the
    # first answer to the last, as a mean over RPS_WINDOW_S (at a few RPS one second is 0, 1 or 2)
    seconds = list(range(min(answers), max(answers) + 1)) if answers else []
    statuses = sorted({s for bucket in answers.values() for s in bucket}, key=lambda s: (s != "200", s))
    for status in statuses:
        ys = [answers.get(t, {}).get(status, 0) for t in seconds]
        means = [sum(ys[max(0, i - RPS_WINDOW_S + 1) : i + 1]) / RPS_WINDOW_S for i in range(len(ys))]
        ax_rps.plot(seconds, means, lw=0.8, color=STATUS_COLOURS.get(status), label=f"{status or '?'}")
    ax_rps.set_ylabel(f"requests/s ({RPS_WINDOW_S} s mean)")
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

    # 3. job time run per second = slots at work: new work, and work run again (after a hand-back
    # that did not keep its progress, or a crash: since the last checkpoint). From the run records.
    work = work or {}
    secs = sorted(work)
    new = [work[t][0] for t in secs]
    redone = [work[t][1] for t in secs]
    if secs:
        ax_work.stackplot(
            secs,
            new,
            redone,
            step="post",
            colors=["tab:green", "tab:red"],
            alpha=0.7,
            labels=["new work", "work redone"],
        )
    ax_work.set_ylabel("job s per s (slots)")
    ax_work.legend(
        loc="upper right",
        fontsize=8,
        title=f"job time run: {sum(new) + sum(redone):.0f} s, of it redone {sum(redone):.0f} s",
        title_fontsize=8,
    )

    # 4. pods
    ax_pods.step(ts, [s["desired"] for s in samples], where="post", lw=1.2, label="HPA desired")
    ax_pods.step(ts, [s["ready"] for s in samples], where="post", lw=1, label="ready")
    ax_pods.step(ts, [s["terminating"] for s in samples], where="post", lw=1, label="terminating (draining)")
    ax_pods.set_ylabel("worker pods")
    ax_pods.set_xlabel("seconds since start")
    top = max([s["desired"] for s in samples] + [1])
    idle = {v["pod"] for v in victims if v["running"] == 0 or (v["running"] is None and not v["in_flight"])}
    for kind, hollow, label in (
        ("scale_down", False, "scale-down, busy victim"),
        ("scale_down", True, "scale-down, idle victim"),
        ("evict", False, "eviction (node drain)"),
    ):
        xs = [e["t"] for e in events if e["kind"] == kind and (e["pod"] in idle) == hollow]
        if kind == "evict":
            xs = [e["t"] for e in events if e["kind"] == kind]
        if xs:
            colour = "tab:blue" if kind == "scale_down" else "tab:cyan"
            ax_pods.scatter(
                xs,
                [top + 0.6] * len(xs),
                marker="v" if kind == "scale_down" else "s",
                facecolors="none" if hollow else colour,
                edgecolors=colour,
                label=label,
                zorder=3,
            )
    marks = {
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
            for ax in (ax_rps, ax_backlog, ax_work, ax_pods):
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
    # below the axis: the markers sit along its top
    ax_pods.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8, ncol=5)
    for ax in (ax_rps, ax_backlog, ax_work, ax_pods):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
