"""bench/e2e's tables: one row per measured load, medians per split, CPU per order and what
"one million orders a minute" would take at that cost, and the A/B of the pipelines (baseline,
any steps between, now, raw) with the issue #11 goals beside each ratio."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.e2e_probe import BACKGROUND_STREAMS
from bench.e2e_run import COMPONENTS, LoadResult

MILLION_PER_MIN = 1_000_000 / 60  # 16,667 orders/s
# Issue #11's goals for bench/e2e (the worker's jobs/s goals are bench/worker's).
GOAL_WRITES_PER_ORDER = 2.0  # stored JetStream writes per order, at most
GOAL_CPU_VS_BASELINE = 0.5  # system CPU per order, at most this share of the baseline's
GOAL_CPU_VS_RAW = 2.0  # ... and at most this multiple of the raw pipeline's
W = 30  # width of the label column


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k" if abs(x) >= 1000 else f"{x:.0f}"


def _n(x: int | None) -> str:
    return "n/a" if x is None else str(x)


def load_table(results: Sequence[LoadResult], title: str) -> str:
    head = (
        f"{'pipeline split':<{W}}{'rate/s':>7}{'accepted/min':>13}{'done/min':>10}{'backlog':>9}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'failed':>8}{'dropped':>8}{'lost':>6}  {'CPU s  nats':>11}{'ingest':>7}{'workers':>8}"
        f"{'k6':>6}{'load':>10}"
    )
    lines = [title, head, "-" * len(head)]
    for r in results:
        c = r.cpu_load_s
        lost = str(r.lost) if r.drained else f"{r.lost}?"
        lines.append(
            f"{r.label:<{W}}{r.target_rate:>7}{_k(r.accepted_per_min):>13}{_k(r.done_per_min):>10}{r.backlog_end:>9}"
            f"{r.k6.p50_ms:>8.2f}{r.k6.p99_ms:>8.1f}{r.k6.failed_share:>8.2%}{r.k6.dropped:>8}{lost:>6}"
            f"  {c['nats']:>11.1f}{c['ingest']:>7.1f}{c['workers']:>8.1f}{c['k6']:>6.1f}"
            f"{r.load_avg[0]:>5.1f}>{r.load_avg[1]:<4.1f}"
        )
    lines.append(
        "  CPU s = CPU seconds used during the load window (k6 start to exit); lost = accepted - done after "
        "the drain ('?' = not drained in time); load = 1-min load average at start>end"
    )
    return "\n".join(lines)


def checks_table(results: Sequence[LoadResult]) -> str:
    """The cross-checks behind `lost`: k6's 200s against the ingest's counters and the stream."""
    head = (
        f"{'pipeline split':<{W}}{'rate/s':>7}{'k6 200s':>9}{'ingest 200s':>12}{'ingest stored':>14}"
        f"{'stream +seq':>12}{'done':>9}{'drain s':>8}{'errors':>7}{'dedup':>6}{'redeliv':>8}{'procs':>6}"
        f"{'NATS writes/order':>18}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.label:<{W}}{r.target_rate:>7}{r.k6.accepted:>9}{_n(r.ingest_200):>12}{_n(r.ingest_stored):>14}"
            f"{r.stream_stored:>12}{r.done:>9}{r.drain_s:>8.1f}{r.worker_errors:>7}{r.deduplicated:>6}"
            f"{r.redeliveries:>8}{r.ingest_processes_read:>6}"
            f"{sum(r.writes_per_order().values()):>18.2f}"
        )
    bad = [
        r
        for r in results
        if not (
            (r.ingest_200 is None or r.k6.accepted == r.ingest_200)
            and (r.ingest_stored is None or r.ingest_stored >= r.k6.accepted)
            and r.stream_stored >= r.k6.accepted
        )
    ]
    lines.append(
        "cross-check: "
        + (
            "k6 200s == ingest 200s <= stored in the stream, for every run (the raw endpoint counts nothing: n/a)"
            if not bad
            else f"MISMATCH in {len(bad)} run(s): " + ", ".join(f"{r.label}@{r.target_rate}" for r in bad)
        )
    )
    return "\n".join(lines)


def cost_table(results: Sequence[LoadResult]) -> str:
    """CPU per order by component (median over the given loads) and the cores 16.7k orders/s need."""
    per = {k: statistics.median(r.us_per_order()[k] for r in results) for k in (*COMPONENTS, "k6")}
    system = sum(per[k] for k in COMPONENTS)
    lines = [f"{'component':<10}{'CPU us/order':>14}{'orders/s per core':>19}{'cores for 16.7k/s':>19}"]
    for k in (*COMPONENTS, "k6"):
        lines.append(
            f"{k:<10}{per[k]:>14.0f}{1e6 / per[k] if per[k] else 0:>19.0f}"
            f"{per[k] * MILLION_PER_MIN / 1e6:>19.1f}"
        )
    lines.append(
        f"{'system':<10}{system:>14.0f}{1e6 / system:>19.0f}{system * MILLION_PER_MIN / 1e6:>19.1f}"
        "   (nats + ingest + workers; k6 is the client, not part of it)"
    )
    return "\n".join(lines)


def split_summary(results: Sequence[LoadResult]) -> str:
    """Medians per pipeline and split over the rounds (the runs were interleaved)."""
    by: dict[str, list[LoadResult]] = {}
    for r in results:
        by.setdefault(r.label, []).append(r)
    head = (
        f"{'pipeline split (median of n)':<{W + 6}}{'accepted/min':>13}{'done/min':>10}{'backlog':>9}"
        f"{'p50 ms':>8}{'p99 ms':>8}"
        f"{'lost':>6}{'us/order nats':>15}{'ingest':>8}{'workers':>8}{'k6':>6}"
    )
    lines = [head, "-" * len(head)]
    for label, rs in by.items():
        med = statistics.median
        us = [r.us_per_order() for r in rs]
        lines.append(
            f"{label + f' (n={len(rs)})':<{W + 6}}{_k(med(r.accepted_per_min for r in rs)):>13}"
            f"{_k(med(r.done_per_min for r in rs)):>10}{med(r.backlog_end for r in rs):>9.0f}"
            f"{med(r.k6.p50_ms for r in rs):>8.2f}{med(r.k6.p99_ms for r in rs):>8.1f}"
            f"{sum(r.lost for r in rs):>6}"
            f"{med(u['nats'] for u in us):>15.0f}{med(u['ingest'] for u in us):>8.0f}"
            f"{med(u['workers'] for u in us):>8.0f}{med(u['k6'] for u in us):>6.0f}"
        )
    return "\n".join(lines)


# --- the A/B -------------------------------------------------------------------------------------
def ab_summary(results: Sequence[LoadResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """{split: {pipeline: medians over its loads}}: what the A/B table prints and --json keeps."""
    groups: dict[str, dict[str, list[LoadResult]]] = {}
    for r in results:
        groups.setdefault(r.split, {}).setdefault(r.pipeline, []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    med = statistics.median
    for split, by_pipeline in groups.items():
        out[split] = {}
        for pipeline, rs in by_pipeline.items():  # in run order: baseline, steps, now, raw
            us = [r.us_per_order() for r in rs]
            streams = sorted({s for r in rs for s in r.stream_writes})
            writes = {s: med(r.writes_per_order().get(s, 0.0) for r in rs) for s in streams}
            per = {k: med(u[k] for u in us) for k in (*COMPONENTS, "k6")}
            out[split][pipeline] = {
                "n": len(rs),
                "rate": med(r.target_rate for r in rs),
                "accepted_per_min": med(r.accepted_per_min for r in rs),
                "done_per_min": med(r.done_per_min for r in rs),
                "p99_ms": med(r.k6.p99_ms for r in rs),
                "lost": sum(r.lost for r in rs),
                "writes_per_order": sum(v for k, v in writes.items() if k not in BACKGROUND_STREAMS),
                "writes_all_streams_per_order": sum(writes.values()),
                "writes_by_stream": writes,
                "us_per_order": per,
                # the median of each load's sum (not the sum of the medians)
                "system_us_per_order": med(sum(u[k] for k in COMPONENTS) for u in us),
            }
    return out


def _ratio(a: float, b: float | None) -> float | None:
    return a / b if b else None


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def ab_table(results: Sequence[LoadResult]) -> str:
    """Per split: baseline, now and raw side by side; writes/order, CPU per order by component and
    the system's as a ratio to the raw pipeline's and the baseline's, with the goals."""
    summary = ab_summary(results)
    head = (
        f"{'split':<22}{'pipeline':<10}{'n':>3}{'rate/s':>7}{'accepted/min':>13}{'done/min':>10}{'p99 ms':>8}"
        f"{'writes/order':>13}{'us/order nats':>15}{'ingest':>8}{'workers':>8}{'system':>8}"
        f"{'vs raw':>8}{'vs baseline':>12}"
    )
    lines = [
        "A/B: medians per split over the rounds; us/order = CPU (load + drain) per order; system = nats + "
        "ingest + workers",
        head,
        "-" * len(head),
    ]
    notes: list[str] = []
    for split, by in summary.items():
        raw = by.get("raw", {}).get("system_us_per_order")
        base = by.get("baseline", {}).get("system_us_per_order")
        for pipeline, m in by.items():
            u, system = m["us_per_order"], m["system_us_per_order"]
            lines.append(
                f"{split:<22}{pipeline:<10}{m['n']:>3}{m['rate']:>7.0f}{_k(m['accepted_per_min']):>13}{_k(m['done_per_min']):>10}"
                f"{m['p99_ms']:>8.1f}{m['writes_per_order']:>13.2f}{u['nats']:>15.0f}{u['ingest']:>8.0f}"
                f"{u['workers']:>8.0f}{system:>8.0f}"
                f"{_x(_ratio(system, raw) if pipeline != 'raw' else None):>8}"
                f"{_x(_ratio(system, base) if pipeline != 'baseline' else None):>12}"
            )
            notes.append(
                f"  {split} {pipeline}: stored writes per order by stream: "
                + (", ".join(f"{s} {v:.3f}" for s, v in m["writes_by_stream"].items() if v) or "none")
            )
        now = by.get("now")
        if now is not None:
            goals = [
                f"writes/order {now['writes_per_order']:.2f} (goal <= {GOAL_WRITES_PER_ORDER:g})",
                f"system CPU/order vs baseline {_x(_ratio(now['system_us_per_order'], base))}"
                f" (goal <= {GOAL_CPU_VS_BASELINE:g}x)",
                f"vs raw {_x(_ratio(now['system_us_per_order'], raw))} (goal <= {GOAL_CPU_VS_RAW:g}x)",
            ]
            lines.append(f"{'':<22}goals (issue #11), now: " + "; ".join(goals))
    notes.append(
        "  writes/order counts every stream but "
        + ", ".join(sorted(BACKGROUND_STREAMS))
        + " (liveness, written every 2 s per worker, not per order)"
    )
    return "\n".join([*lines, *notes])


def sync_cost(results: Sequence[LoadResult], interval: str = "always") -> str:
    """What the strict sync policy costs beside the default, per split: the same ingest and workers
    on a nats-server that fsyncs before every PubAck (`sync`) and one with its default (`now`,
    an fsync every 2 min). Empty unless both ran."""
    lines = []
    med = statistics.median
    for split, by in ab_summary(results).items():
        now, sync = by.get("now"), by.get("sync")
        if not now or not sync:
            continue
        rs = {p: [r for r in results if r.split == split and r.pipeline == p] for p in ("now", "sync")}
        p50 = {p: med(r.k6.p50_ms for r in v) for p, v in rs.items()}
        lines.append(
            f"  {split}: p50 {p50['now']:.1f} -> {p50['sync']:.1f} ms, p99 {now['p99_ms']:.1f} -> "
            f"{sync['p99_ms']:.1f} ms, accepted/min {_k(now['accepted_per_min'])} -> "
            f"{_k(sync['accepted_per_min'])}, nats CPU per order {now['us_per_order']['nats']:.0f} -> "
            f"{sync['us_per_order']['nats']:.0f} µs, system {now['system_us_per_order']:.0f} -> "
            f"{sync['system_us_per_order']:.0f} µs"
        )
    if not lines:
        return ""
    strict = (
        "an fsync before every PubAck, a 200 survives its node's power loss"
        if interval == "always"
        else f"an fsync every {interval}, a power loss loses at most that"
    )
    head = (
        "what a 200 survives costs: the default sync policy (`now`: JetStream fsyncs every 2 min, a 200 "
        f"survives a process crash) -> `sync_interval: {interval}` (`sync`: {strict}):"
    )
    return "\n".join([head, *lines])
