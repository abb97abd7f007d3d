"""One measured load against a running stack: k6 at a fixed rate with a live progress line, then a
bounded wait for the backlog to drain, and every figure bench/e2e reports about that window."""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import e2e_probe as probe
from bench.e2e_k6 import K6Result, K6Run
from bench.e2e_procs import Stack
from orderflow_tools.kit import cpu_s

COMPONENTS = ("nats", "ingest", "workers")


@dataclass
class LoadResult:
    pipeline: str  # now | baseline | raw
    split: str
    target_rate: int
    duration_s: float
    k6: K6Result
    accepted_per_min: float  # k6's 200s over the arrival window
    done_per_min: float  # workers' done per minute while the orders arrived (not the drain)
    backlog_end: int  # consumer pending + ack pending when k6 stopped
    pending_end: int
    ack_pending_end: int
    drained: bool
    drain_s: float
    done: int  # done from the start of the load until drained
    lost: int  # accepted - done after the drain
    stream_stored: int  # ORDERS' sequence advanced by this much
    ingest_stored: int | None  # the ingest's stored + duplicate counters (all processes; None: raw)
    ingest_200: int | None
    ingest_processes_read: str
    worker_errors: int
    deduplicated: int
    redeliveries: int
    stream_writes: dict[str, int]  # messages each stream stored during this load (orders, KV, runs)
    cpu_load_s: dict[str, float]  # during the load (k6 start to k6 exit)
    cpu_total_s: dict[str, float]  # until drained (the workers' share of the backlog included)
    load_avg: tuple[float, float]  # 1-minute load average at the start and at the end

    @property
    def label(self) -> str:
        return f"{self.pipeline} {self.split}"

    def writes_per_order(self) -> dict[str, float]:
        """Messages each stream stored per accepted order."""
        return {k: v / max(1, self.k6.accepted) for k, v in sorted(self.stream_writes.items())}

    def us_per_order(self) -> dict[str, float]:
        per = {
            "nats": self.cpu_total_s["nats"] / max(1, self.k6.accepted),
            "ingest": self.cpu_total_s["ingest"] / max(1, self.k6.requests),
            "workers": self.cpu_total_s["workers"] / max(1, self.done),
            "k6": self.k6.cpu_s / max(1, self.k6.requests),
        }
        return {k: v * 1e6 for k, v in per.items()}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["us_per_order"] = self.us_per_order()
        out["k6"]["failed_share"] = self.k6.failed_share
        return out


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    out = {name: sum(cpu_s(p) for p in group) for name, group in pids.items()}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["bench"] = ru.ru_utime + ru.ru_stime
    return out


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """y at x on the polyline through (xs, ys); xs non-decreasing."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def done_rate(samples: list[tuple[float, float, float]]) -> float:
    """Orders done per second while the orders arrived: the arrival window is where the stream's
    stored count (sampled each second) went from 2% to 98% of this load's total."""
    ts, stored, done = [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples]
    total = stored[-1] - stored[0]
    if total <= 0:
        return 0.0
    ta = _interp(stored, ts, stored[0] + 0.02 * total)
    tb = _interp(stored, ts, stored[0] + 0.98 * total)
    return 0.0 if tb <= ta else (_interp(ts, done, tb) - _interp(ts, done, ta)) / (tb - ta)


class Progress:
    """One live line: rewritten in place on a terminal, a plain line every 5 s otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.tty = sys.stderr.isatty()
        self.quiet = quiet
        self._last = 0.0

    def show(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            sys.stderr.write("\r" + text[:160].ljust(160))
            sys.stderr.flush()
        elif time.monotonic() - self._last >= 5:
            self._last = time.monotonic()
            print("  " + text, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\r" + " " * 160 + "\r")
            sys.stderr.flush()


def wait_drained(
    stack: Stack, since: probe.StreamState, done_since: float, timeout_s: float, progress: Progress
) -> tuple[bool, probe.StreamState, probe.WorkerCounts]:
    """Until nothing is pending or unacked and the workers counted every stored order as done."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = probe.stream_state(stack.monitor_url)
        wc = stack.worker_counts()
        stored = st.last_seq - since.last_seq
        if st.backlog == 0 and st.messages == 0 and wc.done - done_since >= stored:
            return True, st, wc
        if time.monotonic() > deadline:
            return False, st, wc
        progress.show(
            f"draining: backlog {st.backlog} (pending {st.pending}, ack pending {st.ack_pending}), "
            f"done {wc.done - done_since:.0f}/{stored}"
        )
        time.sleep(0.25)


def run_load(
    stack: Stack,
    pipeline: str,
    split: str,
    rate: int,
    duration_s: float,
    drain_timeout_s: float,
    workdir: Path,
    tag: str,
    progress: Progress,
) -> LoadResult:
    pids = stack.pids()
    load0 = os.getloadavg()[0]
    st0 = probe.stream_state(stack.monitor_url)
    seqs0 = probe.stream_seqs(stack.monitor_url)
    wc0 = stack.worker_counts()
    ic0 = stack.ingest_counts()
    cpu0 = _cpu(pids)
    t0 = time.monotonic()
    k6 = K6Run(stack.base_url, rate, duration_s, workdir, tag)
    samples: list[tuple[float, float, float]] = [(t0, st0.last_seq, wc0.done)]
    prev_t, prev_cpu, prev_seq, prev_done = t0, {**cpu0, "k6": 0.0}, st0.last_seq, wc0.done
    while k6.running():
        time.sleep(1.0)
        now = time.monotonic()
        st = probe.stream_state(stack.monitor_url)
        wc = stack.worker_counts()
        samples.append((now, st.last_seq, wc.done))
        cpu = {**_cpu(pids), "k6": cpu_s(k6.pid)}
        dt = now - prev_t
        use = " ".join(f"{k} {(cpu[k] - prev_cpu.get(k, 0.0)) / dt:4.0%}" for k in (*COMPONENTS, "k6"))
        progress.show(
            f"[{pipeline} {split} {rate}/s {now - t0:4.0f}s/{duration_s:.0f}s]"
            f" stored {(st.last_seq - prev_seq) / dt:6.0f}/s"
            f"  done {(wc.done - prev_done) / dt:6.0f}/s  backlog {st.backlog:6d} | CPU {use}"
            f" | load {os.getloadavg()[0]:.1f}"
        )
        prev_t, prev_cpu, prev_seq, prev_done = now, cpu, st.last_seq, wc.done
    res = k6.finish()
    t1 = time.monotonic()
    st1 = probe.stream_state(stack.monitor_url)
    wc1 = stack.worker_counts()
    cpu1 = _cpu(pids)
    samples.append((t1, st1.last_seq, wc1.done))
    drained, st2, wc2 = wait_drained(stack, st0, wc0.done, drain_timeout_s, progress)
    t2 = time.monotonic()
    cpu2 = _cpu(pids)
    ic2 = stack.ingest_counts()
    seqs2 = probe.stream_seqs(stack.monitor_url)
    progress.done()
    done = int(wc2.done - wc0.done)
    return LoadResult(
        pipeline=pipeline,
        split=split,
        target_rate=rate,
        duration_s=duration_s,
        k6=res,
        accepted_per_min=res.accepted / duration_s * 60,
        done_per_min=done_rate(samples) * 60,
        backlog_end=st1.backlog,
        pending_end=st1.pending,
        ack_pending_end=st1.ack_pending,
        drained=drained,
        drain_s=t2 - t1,
        done=done,
        lost=res.accepted - done,
        stream_stored=st2.last_seq - st0.last_seq,
        ingest_stored=None
        if ic0 is None or ic2 is None
        else int(ic2.stored + ic2.duplicate - ic0.stored - ic0.duplicate),
        ingest_200=None if ic0 is None or ic2 is None else int(ic2.http_200 - ic0.http_200),
        ingest_processes_read="-"
        if ic0 is None or ic2 is None
        else f"{min(ic0.processes_read, ic2.processes_read)}/{len(stack.ingest_pids)}",
        worker_errors=int(wc2.error - wc0.error),
        deduplicated=int(wc2.deduplicated - wc0.deduplicated),
        redeliveries=int(wc2.redeliveries - wc0.redeliveries),
        stream_writes={k: v - seqs0.get(k, 0) for k, v in seqs2.items() if v - seqs0.get(k, 0)},
        cpu_load_s={k: cpu1[k] - cpu0[k] for k in (*COMPONENTS, "bench")} | {"k6": res.cpu_s},
        cpu_total_s={k: cpu2[k] - cpu0[k] for k in (*COMPONENTS, "bench")} | {"k6": res.cpu_s},
        load_avg=(load0, os.getloadavg()[0]),
    )
