"""bench/e2e's tables: one row per measured load, medians per split, CPU per order and what
"one million orders a minute" would take at that cost."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.e2e_run import COMPONENTS, LoadResult

MILLION_PER_MIN = 1_000_000 / 60  # 16,667 orders/s


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k" if abs(x) >= 1000 else f"{x:.0f}"


def load_table(results: Sequence[LoadResult], title: str) -> str:
    head = (
        f"{'split':<22}{'rate/s':>7}{'accepted/min':>13}{'done/min':>10}{'backlog':>9}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'failed':>8}{'dropped':>8}{'lost':>6}  {'CPU s  nats':>11}{'ingest':>7}{'workers':>8}"
        f"{'k6':>6}{'load':>10}"
    )
    lines = [title, head, "-" * len(head)]
    for r in results:
        c = r.cpu_load_s
        lost = str(r.lost) if r.drained else f"{r.lost}?"
        lines.append(
            f"{r.split:<22}{r.target_rate:>7}{_k(r.accepted_per_min):>13}{_k(r.done_per_min):>10}{r.backlog_end:>9}"
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
        f"{'split':<22}{'rate/s':>7}{'k6 200s':>9}{'ingest 200s':>12}{'ingest stored':>14}"
        f"{'stream +seq':>12}{'done':>9}{'drain s':>8}{'errors':>7}{'dedup':>6}{'redeliv':>8}{'procs':>6}"
        f"{'NATS writes/order':>18}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.split:<22}{r.target_rate:>7}{r.k6.accepted:>9}{r.ingest_200:>12}{r.ingest_stored:>14}"
            f"{r.stream_stored:>12}{r.done:>9}{r.drain_s:>8.1f}{r.worker_errors:>7}{r.deduplicated:>6}"
            f"{r.redeliveries:>8}{r.ingest_processes_read:>6}"
            f"{sum(r.stream_writes.values()) / max(1, r.k6.accepted):>18.2f}"
        )
    bad = [
        r
        for r in results
        if not (
            r.k6.accepted == r.ingest_200
            and r.ingest_stored >= r.k6.accepted
            and r.stream_stored >= r.k6.accepted
        )
    ]
    lines.append(
        "cross-check: "
        + (
            "k6 200s == ingest 200s <= stored in the stream, for every run"
            if not bad
            else f"MISMATCH in {len(bad)} run(s): " + ", ".join(f"{r.split}@{r.target_rate}" for r in bad)
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
    """Medians per split over the rounds (the runs were interleaved: A, B, C, A, B, C, ...)."""
    by: dict[str, list[LoadResult]] = {}
    for r in results:
        by.setdefault(r.split, []).append(r)
    head = (
        f"{'split (median of n)':<26}{'accepted/min':>13}{'done/min':>10}{'backlog':>9}"
        f"{'p50 ms':>8}{'p99 ms':>8}"
        f"{'lost':>6}{'us/order nats':>15}{'ingest':>8}{'workers':>8}{'k6':>6}"
    )
    lines = [head, "-" * len(head)]
    for split, rs in by.items():
        med = statistics.median
        us = [r.us_per_order() for r in rs]
        lines.append(
            f"{split + f' (n={len(rs)})':<26}{_k(med(r.accepted_per_min for r in rs)):>13}"
            f"{_k(med(r.done_per_min for r in rs)):>10}{med(r.backlog_end for r in rs):>9.0f}"
            f"{med(r.k6.p50_ms for r in rs):>8.2f}{med(r.k6.p99_ms for r in rs):>8.1f}"
            f"{sum(r.lost for r in rs):>6}"
            f"{med(u['nats'] for u in us):>15.0f}{med(u['ingest'] for u in us):>8.0f}"
            f"{med(u['workers'] for u in us):>8.0f}{med(u['k6'] for u in us):>6.0f}"
        )
    return "\n".join(lines)
