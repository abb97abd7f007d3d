"""Turning a recorded run directory (see orderflow_tools.loadrun) into per-second series and figures."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderflow_tools.load_k6 import ORDERS_REQUEST, read_points
from orderflow_tools.load_metrics import read_samples

Series = tuple[list[float], list[float]]  # (seconds since start, values)


@dataclass
class Run:
    directory: Path
    meta: dict[str, Any]
    start: float
    k6_end: float | None
    # k6 side, one bin per second
    by_status: dict[str, Series] = field(default_factory=dict)
    latency: dict[str, Series] = field(default_factory=dict)  # p50/p90/p99 in ms
    # service side, from metrics.jsonl (the services) and nats.jsonl (JetStream itself)
    accepted_rate: Series = ([], [])
    done_rate: Series = ([], [])
    accepted_total: Series = ([], [])
    done_total: Series = ([], [])
    pending: Series = ([], [])
    ack_pending: Series = ([], [])
    # where each came from ("" when it was not recorded), and why what is missing is missing
    accepted_source: str = ""
    done_source: str = ""
    queue_source: str = ""
    missing: dict[str, str] = field(default_factory=dict)
    # workers x slots, from what the load run recorded (None when it did not, or in direct mode)
    capacity: int | None = None
    capacity_source: str = ""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _k6_series(run: Run, path: Path) -> None:
    counts: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    durations: dict[int, list[float]] = defaultdict(list)
    for p in read_points(path, {"orders_answered", "http_req_duration"}):
        second = int(p.t - run.start)
        if p.metric == "orders_answered":
            if p.tags.get("invalid") != "expected":
                counts[p.tags.get("status", "?")][second] += p.value
        elif p.tags.get("name") == ORDERS_REQUEST:
            durations[second].append(p.value)
    if counts:
        last = max(max(c) for c in counts.values())
        xs = [float(s) for s in range(last + 1)]
        run.by_status = {st: (xs, [c.get(int(x), 0.0) for x in xs]) for st, c in sorted(counts.items())}
    # two-second bins keep p99 meaningful at low rates
    bins: dict[int, list[float]] = defaultdict(list)
    for second, values in durations.items():
        bins[second - second % 2].extend(values)
    xs2 = sorted(bins)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        run.latency[name] = ([x + 1.0 for x in xs2], [_quantile(bins[x], q) for x in xs2])


def _total(samples: list[list[Any]], name: str, **labels: str) -> float | None:
    values = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    return sum(values) if values else None


# Two samples of one target further apart than this leave a gap in its rate, not an average.
GAP_S = 3.0


def _counters_to_series(per_target: dict[str, list[tuple[float, float]]]) -> tuple[Series, Series]:
    """Counters per target -> (rate, total since the first sample) on one-second bins, summed over
    the targets. Scrapes jitter: a bin can hold two samples of one target and the next none. A sum
    over whatever fell into a bin read that missing sample as 0 (the cumulative line dropped to 0),
    so each second takes every target's rate of the interval covering it (NaN, a gap, when its
    samples are more than GAP_S apart) and every target's last total so far (a count carries)."""
    rates: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    totals: dict[str, dict[int, float]] = {}
    for name, points in per_target.items():
        if not points:
            continue
        base = points[0][1]
        totals[name] = {math.floor(points[0][0]): 0.0}
        for (t0, v0), (t1, v1) in itertools.pairwise(points):
            totals[name][math.floor(t1)] = v1 - base
            if t1 <= t0 or v1 < v0:  # a counter reset (restart) is skipped, not a negative rate
                continue
            value = (v1 - v0) / (t1 - t0) if t1 - t0 <= GAP_S else math.nan
            for second in range(math.floor(t0) + 1, math.floor(t1) + 1):
                rates[second][name].append(value)
    rate_xs = sorted(rates)
    rate = [sum(sum(v) / len(v) for v in rates[x].values()) for x in rate_xs]
    total_xs = sorted({x for per in totals.values() for x in per})
    carried: dict[str, float] = {}
    total = []
    for x in total_xs:
        for name, per in totals.items():
            if x in per:
                carried[name] = per[x]
        total.append(sum(carried.values()))
    return ([float(x) for x in rate_xs], rate), ([float(x) for x in total_xs], total)


def _nats_series(run: Run, path: Path) -> dict[str, Any]:
    """JetStream's view: backlog and in-flight as sampled; orders stored in and leaving ORDERS
    (a work-queue stream drops a message once it is acked or termed)."""
    pending: dict[int, float] = {}
    ack: dict[int, float] = {}
    stored: list[tuple[float, float]] = []
    left: list[tuple[float, float]] = []
    base: tuple[float, float] | None = None
    for line in read_samples(path):
        if not line.get("ok"):
            continue
        t, samples = line["t"] - run.start, line["samples"]
        second = round(t)
        p = _total(samples, "nats_consumer_pending")
        a = _total(samples, "nats_consumer_ack_pending")
        if p is not None:
            pending[second] = p
            ack[second] = a or 0.0
        last_seq, messages = _total(samples, "nats_stream_last_seq"), _total(samples, "nats_stream_messages")
        if last_seq is not None and messages is not None:
            base = base or (last_seq, messages)
            stored.append((t, last_seq - base[0]))
            left.append((t, (last_seq - base[0]) - (messages - base[1])))
    xs = sorted(pending)
    return {
        "pending": ([float(x) for x in xs], [pending[x] for x in xs]),
        "ack_pending": ([float(x) for x in xs], [ack[x] for x in xs]),
        "stored": _counters_to_series({"nats": stored}) if stored else None,
        "left": _counters_to_series({"nats": left}) if left else None,
    }


def _metrics_series(run: Run, path: Path) -> None:
    # counters per target -> rate per target -> summed on one-second bins
    per_target: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    gauges: dict[str, dict[int, float]] = defaultdict(dict)
    for line in read_samples(path):
        if not line.get("ok"):
            continue
        t, target, samples = line["t"] - run.start, line["target"], line["samples"]
        stored = _total(samples, "orderflow_orders_published_total", result="stored")
        done = _total(samples, "orderflow_work_done_total", status="done")
        if stored is not None:
            per_target["accepted"][target].append((t, stored))
        if done is not None:
            per_target["done"][target].append((t, done))
        for gauge, key in (
            ("orderflow_consumer_pending", "pending"),
            ("orderflow_consumer_ack_pending", "ack"),
        ):
            values = [v for n, _, v in samples if n == gauge]
            if values:
                second = round(t)
                gauges[key][second] = max([*values, gauges[key].get(second, 0.0)])
    # The ingest is the target that publishes (or the one the run recorded as the ingest); in
    # direct mode it also does the work, so "done" is the ingest's count there, not the workers'.
    ingest_url = ((run.meta.get("sources") or {}).get("ingest_metrics") or {}).get("url")
    ingest = {t for t in per_target["accepted"]} | ({ingest_url} if ingest_url else set())
    for key in ("accepted", "done"):
        if per_target[key]:
            rate, total = _counters_to_series(per_target[key])
            setattr(run, f"{key}_rate", rate)
            setattr(run, f"{key}_total", total)
            setattr(run, f"{key}_source", _counted_by(per_target[key], ingest))
    for key, attr in (("pending", "pending"), ("ack", "ack_pending")):
        xs = sorted(gauges[key])
        setattr(run, attr, ([float(x) for x in xs], [gauges[key][x] for x in xs]))
    if run.pending[0]:
        run.queue_source = "workers"


def _counted_by(per_target: dict[str, list[tuple[float, float]]], ingest: set[str]) -> str:
    """Which services' /metrics a counter came from: those whose count moved in the run (all that
    reported it when none moved)."""
    moved = [t for t, pts in per_target.items() if pts and pts[-1][1] != pts[0][1]] or list(per_target)
    names = []
    if any(t in ingest for t in moved):
        names.append("the ingest's")
    if any(t not in ingest for t in moved):
        names.append("the workers'")
    return f"{' and '.join(names)} /metrics"


def load_run(directory: Path) -> Run:
    meta_path = directory / "run.json"
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    k6_path, metrics_path, nats_path = (
        directory / "k6.json",
        directory / "metrics.jsonl",
        directory / "nats.jsonl",
    )
    start = meta.get("started_at")
    if start is None:  # a hand-made directory: start at the first k6 point
        first = next(read_points(k6_path, {"orders_answered"}), None) if k6_path.exists() else None
        start = first.t if first else 0.0
    k6_end = meta.get("k6_ended_at")
    run = Run(directory, meta, float(start), None if k6_end is None else float(k6_end) - float(start))
    if k6_path.exists():
        _k6_series(run, k6_path)
    if metrics_path.exists():
        _metrics_series(run, metrics_path)
    nats = _nats_series(run, nats_path) if nats_path.exists() else None
    if nats is not None and nats["pending"][0]:
        # JetStream as it is at each second beats the workers' gauge, refreshed every few seconds.
        run.pending, run.ack_pending, run.queue_source = nats["pending"], nats["ack_pending"], "nats"
    if nats is not None and not run.accepted_source and nats["stored"]:
        run.accepted_rate, run.accepted_total = nats["stored"]
        run.accepted_source = "messages stored in ORDERS"
    if nats is not None and not run.done_source and nats["left"]:
        run.done_rate, run.done_total = nats["left"]
        run.done_source = "messages leaving ORDERS (acked or termed)"
    setup = meta.get("setup") or {}
    workers, slots = setup.get("workers"), setup.get("slots_per_worker")
    if meta.get("mode") != "direct" and workers and slots:
        run.capacity = int(workers) * int(slots)
        run.capacity_source = f"{workers} workers x {slots} slots, from {setup.get('from') or 'run.json'}"
    _explain_missing(run)
    return run


def _explain_missing(run: Run) -> None:
    sources = run.meta.get("sources") or {}
    nats = sources.get("nats") or {}
    ingest = sources.get("ingest_metrics") or {}
    nats_why = (
        f"NATS at {nats.get('url')} did not answer ({nats['error']})"
        if nats.get("error")
        else "no JetStream samples (nats.jsonl)"
    )
    if not run.by_status:
        run.missing["requests"] = "no k6 answers recorded (k6.json missing or empty: see k6.log)"
    if not run.accepted_source and run.meta.get("mode") == "direct":
        run.missing["accepted"] = "direct mode stores no orders: the ingest does the work inside the request"
    elif not run.accepted_source:
        why = (
            f"the ingest's metrics at {ingest.get('url')} did not answer ({ingest['error']})"
            if ingest.get("error")
            else "no ingest metrics sampled"
        )
        run.missing["accepted"] = f"{why}, and {nats_why}"
    if not run.done_source:
        workers = "no worker /metrics were sampled (--metrics, or a run against `orderflow dev`)"
        run.missing["done"] = f"{workers}, and {nats_why}"
    if not run.queue_source:
        run.missing["queue"] = f"{nats_why}, and no worker sampled orderflow_consumer_pending"
    elif not any(run.pending[1]) and not any(run.ack_pending[1]):
        # An all-zero queue is data, but a chart of it shows nothing: say so instead of drawing it.
        why = f"the queue stayed empty the whole run ({len(run.pending[1])} samples, all 0)"
        if run.meta.get("mode") == "direct":
            why += ": in direct mode the ingest does the work inside the request and queues nothing"
        run.missing["queue"] = why


def figures(run: Run) -> dict[str, Any]:
    """The numbers a run is judged by: peak arrival rate, answers by status, backlog peak, drain time."""
    totals = {st: int(sum(v)) for st, (_, v) in run.by_status.items()}
    per_second = [sum(vals) for vals in zip(*(v for _, v in run.by_status.values()), strict=True)]
    out: dict[str, Any] = {
        "mode": run.meta.get("mode"),
        "scenario": run.meta.get("scenario"),
        "requests": sum(totals.values()),
        "by_status": totals,
        "peak_rps": max(per_second, default=0),
        "status_500": totals.get("500", 0),
        "k6_exit_code": run.meta.get("k6_exit_code"),
    }
    xs, ys = run.pending
    if xs:
        peak_at = max(range(len(ys)), key=ys.__getitem__)
        out["backlog_peak"] = ys[peak_at]
        out["backlog_peak_at_s"] = xs[peak_at]
        # the queue is empty when nothing is pending and nothing awaits its ack; drained = the
        # first empty sample after the last non-empty one
        ack = dict(zip(*run.ack_pending, strict=True))
        queue = [(x, y + ack.get(x, 0.0)) for x, y in zip(xs, ys, strict=True)]
        busy = [x for x, y in queue if y > 0]
        drained = next((x for x, y in queue if busy and x > busy[-1] and y == 0), None)
        out["drained_at_s"] = drained
        if drained is not None and run.k6_end is not None:
            # A backlog worked off while the load still ran (a sine ends at 0 RPS) was empty at
            # the load's end: 0, not the negative seconds before k6 exited.
            out["drained_after_load_end_s"] = max(0.0, round(drained - run.k6_end, 1))
        if drained is not None and ys[peak_at] > 0:
            out["drain_from_peak_s"] = round(drained - xs[peak_at], 1)
    # What was measured (with where it came from in figures.json's sources), or null and why.
    for key, total in (("accepted", run.accepted_total), ("done", run.done_total)):
        out[key] = int(total[1][-1]) if total[1] else None
        if out[key] is None:
            out[f"{key}_missing"] = run.missing.get(key, "not recorded")
    out["capacity_slots"] = run.capacity
    return out
