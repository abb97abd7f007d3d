"""bench/worker: no-op jobs/s of one orderflow worker process against a raw nats-py fetch(100)+ack
loop and a FastStream pull subscriber, same run, same nats-server; with `--baseline-tree PATH` also
the worker of another commit (A/B in one run; `--tree LABEL=PATH` adds more); plus the job path's own cost per job, in process.

    python -m bench.worker [--orders 20000] [--rounds 3] [--concurrency 100]
                           [--baseline-tree /tmp/orderflow-base] [--tree LABEL=PATH ...]
                           [--tracing] [--json OUT]

Each contender gets the same N orders pre-published into fresh streams (the layout its own tree
creates), then starts; the rate is N / (time from the first message leaving the stream to the
stream being empty; a work-queue stream drops a message when it is acked). Contenders run
interleaved (A, B, C, A, B, C, ...) and the medians are reported. Every contender takes batches of
100 and acks with a plain (unconfirmed) ack; what else each does per message is printed next to
its figure, and measured: the stored JetStream writes per job (every stream's sequence, the
pre-published orders not counted) and the CPU per job of the contender and of nats-server over
the same window. Configuration and the reasons for it: docs/bench.md.
With --tracing, two more workers of this tree traced at 10 % and 100 % (parent-based, OTLP/HTTP to
bench/otlp_sink.py), their orders carrying a `traceparent` sampled as a traced ingest at that ratio
would have sampled them; each printed beside the untraced one (docs/observability.md "Traces").
Prints figures; it does not pass or fail on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats

from bench.e2e_probe import BACKGROUND_STREAMS, stream_seqs
from bench.raw_consumer import ensure_durable
from bench.trees import Tree, add_tree_args, other_trees, this_tree
from orderflow import contract
from orderflow_tools.kit import NatsServer, Process, StartError, cpu_s, free_port, tree_cpu_s

# What each contender does per message (checked against the code of each; docs/bench.md).
DOES = {
    "now": "decode; done status stored (confirmed KV write); ack (plain)",
    "baseline": "in-progress; decode; status read; processing write; done stored (confirmed); ack_sync (confirmed)",
    "raw": "ack (plain); no decode",
    "faststream": "decode + validate (msgspec, Order struct); ack (plain, AckPolicy default)",
    "otel10": "as now, traced: a run span for the 10 % of orders sampled at the ingest",
    "otel100": "as now, traced: a run span for every order (OTLP/HTTP export)",
}
TRACED = {"otel10": 10, "otel100": 100}  # the traced contenders: the percentage of orders sampled
NAMES = {
    "now": "orderflow now",
    "baseline": "orderflow baseline",
    "raw": "raw fetch(100)+ack",
    "faststream": "FastStream pull",
    "otel10": "traced at 10 %",
    "otel100": "traced at 100 %",
}
GOAL_RAW, GOAL_FASTSTREAM = 0.5, 2.0  # issue #11: >= 0.5x the raw loop, >= 2x FastStream


@dataclass
class Figures:
    key: str
    name: str
    does: str
    commit: str
    rates: list[float] = field(default_factory=list)  # jobs/s per round
    cpu_us: list[float] = field(default_factory=list)  # the contender's CPU per job
    nats_us: list[float] = field(default_factory=list)  # nats-server's CPU per job
    writes: list[dict[str, float]] = field(default_factory=list)  # stored writes per job, by stream

    def median(self, xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    def writes_per_job(self) -> dict[str, float]:
        streams = sorted({s for w in self.writes for s in w})
        return {s: statistics.median(w.get(s, 0.0) for w in self.writes) for s in streams}

    def writes_total(self) -> float:
        """Stored writes per job, the liveness records (written on a timer) not counted."""
        return sum(v for s, v in self.writes_per_job().items() if s not in BACKGROUND_STREAMS)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["jobs_per_s"] = self.median(self.rates)
        out["cpu_us_per_job"] = self.median(self.cpu_us)
        out["nats_us_per_job"] = self.median(self.nats_us)
        out["writes_per_job"] = self.writes_total()
        out["writes_by_stream"] = self.writes_per_job()
        return out


async def _reset(url: str) -> None:
    """Every stream gone: each contender starts on the layout its own tree creates."""
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    for info in await js.streams_info():
        await js.delete_stream(info.config.name or "")
    await nc.close()


def _traceparent(i: int, sampled_pct: int) -> dict[str, str]:
    """Order i's context as a traced ingest at `sampled_pct` % leaves it: one order in 100/pct sampled."""
    sampled = i * sampled_pct // 100 != (i + 1) * sampled_pct // 100
    return {"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-{3 if sampled else 2:02x}"}


async def _raw_consumer_and_fill(
    url: str, count: int, raw_consumer: bool, sampled_pct: int | None = None
) -> None:
    if raw_consumer:
        await ensure_durable(url)
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=10)
    payloads = [contract.encode(contract.Order(f"b{i}", 1, 1, "bench", time.time())) for i in range(count)]
    headers = [None if sampled_pct is None else _traceparent(i, sampled_pct) for i in range(count)]
    for start in range(0, count, 2000):
        futures = [
            await js.publish_async(
                contract.order_subject("default", f"b{start + i}"), p, headers=headers[start + i]
            )
            for i, p in enumerate(payloads[start : start + 2000])
        ]
        await asyncio.gather(*futures)
    await nc.close()


@dataclass(frozen=True)
class Window:
    rate: float
    cpu_s: float  # the contender's CPU from the first message taken to the last acked
    nats_cpu_s: float


async def time_consumption(url: str, count: int, proc: Process, nats_pid: int, timeout_s: float) -> Window:
    nc = await nats.connect(url)
    js = nc.jetstream()
    t0: float | None = None
    cpu0 = nats0 = 0.0
    deadline = time.monotonic() + timeout_s
    pid = proc.pid
    assert pid is not None
    try:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise SystemExit(f"bench: {proc.name} exited with {proc.returncode()}{proc.log_tail()}")
            left = (await js.stream_info(contract.STREAM)).state.messages
            now = time.monotonic()
            if t0 is None and left < count:
                t0, cpu0, nats0 = now, tree_cpu_s(pid), cpu_s(nats_pid)
            if left == 0 and t0 is not None:
                return Window(count / (now - t0), tree_cpu_s(pid) - cpu0, cpu_s(nats_pid) - nats0)
            await asyncio.sleep(0.01)
        raise SystemExit(f"bench: {proc.name} did not finish in time{proc.log_tail()}")
    finally:
        await nc.close()


def contender(key: str, tree: Tree, url: str, concurrency: int, log: Path, sink: str = "") -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERFLOW_", "OTEL_"))}
    if key in TRACED:  # parent-based: the order's traceparent decides, as the ingest sampled it
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=sink,
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=str(TRACED[key] / 100),
        )
    if key not in ("raw", "faststream"):  # an orderflow worker, of this tree or another
        env.update(
            ORDERFLOW_NATS_URL=url,
            ORDERFLOW_HTTP_PORT=str(free_port()),
            ORDERFLOW_HTTP_HOST="127.0.0.1",
            ORDERFLOW_HANDLERS="worker.noop",
            ORDERFLOW_CONCURRENCY=str(concurrency),
            ORDERFLOW_LOG_LEVEL="warning",
        )
        cmd = tree.module("worker")
    elif key == "raw":
        cmd = [*tree.module("bench.raw_consumer"), url, contract.DURABLE]
    else:
        cmd = [*tree.module("bench.faststream_consumer"), url, "faststream"]
    return Process(cmd, env, log, cwd=tree.root, name=NAMES.get(key, f"orderflow {key}")).start()


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(figs: dict[str, Figures], rounds: int) -> list[str]:
    lines = [
        f"{'contender':<20}{'jobs/s':>9}{'CPU us/job':>12}{'nats us/job':>13}{'writes/job':>12}"
        f"  per message (median of {rounds})",
    ]
    for f in figs.values():
        lines.append(
            f"{f.name:<20}{f.median(f.rates):>9.0f}{f.median(f.cpu_us):>12.1f}{f.median(f.nats_us):>13.1f}"
            f"{f.writes_total():>12.2f}  {f.does}"
        )
    lines.append(
        "  writes/job: messages JetStream stored per job (not the pre-published orders, not "
        + ", ".join(sorted(BACKGROUND_STREAMS))
        + ", liveness on a timer); by stream: "
        + "; ".join(
            f"{f.name}: " + (", ".join(f"{s} {v:.3f}" for s, v in f.writes_per_job().items() if v) or "none")
            for f in figs.values()
        )
    )
    rate = {k: f.median(f.rates) for k, f in figs.items()}
    lines.append("")
    if "raw" in rate:
        lines.append(
            f"orderflow / raw loop:   {_ratio(rate['now'], rate['raw']):.2f}x   (goal >= {GOAL_RAW:g}x)"
        )
    if "faststream" in rate:
        lines.append(
            f"orderflow / FastStream: {_ratio(rate['now'], rate['faststream']):.2f}x   (goal >= {GOAL_FASTSTREAM:g}x)"
        )
    for k, f in figs.items():
        if k in TRACED:
            lines.append(
                f"tracing off vs {k}: {rate['now']:.0f} vs {rate[k]:.0f} jobs/s (costs "
                f"{1 - _ratio(rate[k], rate['now']):.1%}), CPU {figs['now'].median(figs['now'].cpu_us):.1f} vs "
                f"{f.median(f.cpu_us):.1f} us/job"
            )
        if k in ("now", "raw", "faststream", *TRACED):
            continue
        lines.append(
            f"orderflow / {k} ({f.commit}): {_ratio(rate['now'], rate[k]):.2f}x jobs/s; {k} / raw loop "
            f"{_ratio(rate[k], rate.get('raw', float('nan'))):.2f}x, {k} / FastStream "
            f"{_ratio(rate[k], rate.get('faststream', float('nan'))):.2f}x"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--concurrency", type=int, default=100, help="orderflow worker slots (raw and FastStream take 100)"
    )
    add_tree_args(ap, "worker")
    ap.add_argument(
        "--tracing",
        action="store_true",
        help="add two workers traced at 10 %% and 100 %% (OTLP/HTTP to a local sink)",
    )
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="save the figures as JSON")
    args = ap.parse_args(argv)
    now = this_tree()
    others = other_trees(args)
    trees: dict[str, Tree] = {**others, "now": now, "raw": now, "faststream": now}
    keys = [*others, "now", *(TRACED if args.tracing else ()), "raw", "faststream"]
    trees.update(dict.fromkeys(TRACED, now))
    try:
        import faststream  # noqa: F401
    except ImportError:
        print("bench: faststream not installed (pip install 'faststream[nats]'); skipping it")
        keys.remove("faststream")
    figs = {
        k: Figures(
            k,
            NAMES.get(k, f"orderflow {k}"),
            DOES.get(k, f"the worker at {trees[k].commit} (what it stores: writes/job)"),
            trees[k].commit,
        )
        for k in keys
    }

    work = Path(tempfile.mkdtemp(prefix="orderflow-bench-worker-"))
    server = NatsServer(work / "js", work / "nats-server.log")
    sink_port = free_port()
    sink = Process(
        [*now.module("bench.otlp_sink"), str(sink_port)],
        {},
        work / "sink.log",
        cwd=now.root,
        name="otlp sink",
    )
    try:
        server.start()
        if args.tracing:
            sink.start()
    except StartError as exc:
        server.stop()
        sink.stop()
        raise SystemExit(f"bench: {exc}") from None
    url, nats_pid = server.url, server.process.pid
    assert nats_pid is not None
    print(
        f"bench/worker: {args.orders} orders x {args.rounds} rounds; this tree {now.commit}"
        + "".join(f", {k} {t.commit} ({t.root})" for k, t in others.items())
        + f"; load average {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} cores",
        flush=True,
    )
    try:
        for r in range(args.rounds):
            for key in keys:
                tree = trees[key]
                asyncio.run(_reset(url))
                tree.ensure_layout(url)
                asyncio.run(_raw_consumer_and_fill(url, args.orders, key == "raw", TRACED.get(key)))
                seqs0 = stream_seqs(server.monitor_url)
                sink_url = f"http://127.0.0.1:{sink_port}"
                proc = contender(key, tree, url, args.concurrency, work / f"{key}.log", sink_url)
                try:
                    w = asyncio.run(time_consumption(url, args.orders, proc, nats_pid, timeout_s=300))
                finally:
                    proc.stop()
                seqs1 = stream_seqs(server.monitor_url)
                f = figs[key]
                f.rates.append(w.rate)
                f.cpu_us.append(w.cpu_s / args.orders * 1e6)
                f.nats_us.append(w.nats_cpu_s / args.orders * 1e6)
                f.writes.append(
                    {s: (v - seqs0.get(s, 0)) / args.orders for s, v in seqs1.items() if v != seqs0.get(s, 0)}
                )
                print(
                    f"round {r + 1}/{args.rounds} {f.name:>20}: {w.rate:8.0f} jobs/s, "
                    f"{f.cpu_us[-1]:6.1f} us CPU/job (nats {f.nats_us[-1]:5.1f}), "
                    f"{sum(v for s, v in f.writes[-1].items() if s not in BACKGROUND_STREAMS):.2f} writes/job",
                    flush=True,
                )
    finally:
        server.stop()
        sink.stop()
    shutil.rmtree(work, ignore_errors=True)  # kept when a contender failed (its log is there)
    import uvloop  # the worker runs on uvloop

    from bench.jobpath import bare_tasks_us, job_path_us

    per_job, sent = uvloop.run(job_path_us(100_000, args.concurrency))
    bare_task = uvloop.run(bare_tasks_us(100_000, args.concurrency))
    print()
    for line in report(figs, args.rounds):
        print(line)
    print(
        f"job path per job (in process, stand-in transport, bench/jobpath.py): {per_job:.1f} us, "
        f"{sent:.0f} messages sent per job   (a bare asyncio task + semaphore: {bare_task:.1f} us)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        rate = {k: f.median(f.rates) for k, f in figs.items()}
        args.json.write_text(
            json.dumps(
                {
                    "bench": "worker",
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "cores": len(os.sched_getaffinity(0)),
                    "contenders": {k: f.summary() for k, f in figs.items()},
                    "ratios": {
                        "now_over_raw": _ratio(rate["now"], rate.get("raw", float("nan"))),
                        "now_over_faststream": _ratio(rate["now"], rate.get("faststream", float("nan"))),
                        "now_over_baseline": _ratio(rate["now"], rate.get("baseline", float("nan"))),
                    },
                    "job_path_us": per_job,
                },
                indent=2,
            )
        )
        print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
