"""bench/e2e: the whole path under a constant arrival rate (issue #7): k6 -> ingest (P processes on
one port) -> NATS JetStream -> W workers (no-op or tiny jobs), all on this machine.

    python -m bench.e2e [--rate 1000] [--duration 30] [--ingest-procs P] [--workers W]
                        [--concurrency 100] [--job noop|tiny] [--splits 1:1,2:1,1:2 --rounds 2]
    python -m bench.e2e --find-max [--start-rate 500] [--step-factor 1.25] [--step-duration 10]
                        [--p99-limit-ms 50] [--max-failed 0.01]
    ... [--pipelines now,raw] [--baseline-tree /tmp/orderflow-base] [--tree LABEL=PATH ...] [--json OUT]

Per load it reports accepted/min (k6's 200s), done/min (the workers' orderflow_work_done_total
{status="done"} over the same window), the backlog when the load stops (consumer pending + ack
pending), p50/p99 of POST /orders (k6), CPU seconds per component (/proc/<pid>/stat utime+stime;
the ingest with its children; k6 from the bench's reaped-children usage) and lost = accepted - done
once the backlog has drained (bounded wait), cross-checked with the ingest's stored+duplicate
counters and the stream's sequence. `--find-max` steps the rate up until p99, failures or a
shortfall of accepted orders stop it, and prints the highest sustained rate.

In the same run it measures a raw pipeline (`raw`: a bare Starlette endpoint that validates,
publishes and awaits the PubAck, and raw fetch(100)+ack consumers, bench/raw_ingest.py and
bench/raw_consumer.py) and, with `--baseline-tree PATH`, the ingest and workers of another commit's
tree (`baseline`; `--tree LABEL=PATH` adds more; scripts/bench/baseline-tree.sh makes one). The A/B
table puts them side by side: stored JetStream writes per order and system CPU per order (nats +
ingest + workers), as a ratio to the raw pipeline's and the baseline's.

With --splits the configurations run interleaved (A, B, C, A, B, C, ...), and within each the
pipelines (baseline, the --tree steps, now, raw), each on a fresh stack, so that other load on a shared machine
spreads over all of them. Prints figures; it does not pass or
fail on timing (only a lost order makes the exit code non-zero).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import e2e_probe as probe
from bench import e2e_report as report
from bench.e2e_procs import Stack, StackConfig, tool
from bench.e2e_run import LoadResult, Progress, run_load
from bench.trees import Tree, add_tree_args, other_trees, this_tree
from orderflow_tools.kit import REPO


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = _cores()
    # Sized from the cores: a quarter each for the ingest and the workers; NATS and k6 (about a
    # core per 6-8k requests/s) take the rest. On 2 cores: P=1, W=1.
    share = max(1, round(cores / 4))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingest-procs", type=int, default=share, help=f"ingest processes (default {share})")
    ap.add_argument("--workers", type=int, default=share, help=f"worker processes (default {share})")
    ap.add_argument(
        "--splits", default="", help="P:W,P:W,... run these splits interleaved (overrides the two above)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat the splits this many times, interleaved")
    ap.add_argument(
        "--concurrency", type=int, default=100, help="ORDERFLOW_CONCURRENCY per worker (default 100)"
    )
    ap.add_argument(
        "--job",
        choices=("noop", "tiny"),
        default="noop",
        help="noop: worker.noop; tiny: worker.demo with ORDERFLOW_WORK_S=0.001 (records run start/end)",
    )
    ap.add_argument("--rate", type=int, default=1000, help="arrivals per second (default 1000)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of load (default 30)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds of unmeasured load first (default 3)")
    ap.add_argument("--drain-timeout", type=float, default=60, help="bound on the wait for the backlog (s)")
    fm = ap.add_argument_group("--find-max")
    fm.add_argument("--find-max", action="store_true", help="step the rate up until a limit is crossed")
    fm.add_argument("--start-rate", type=int, default=500)
    fm.add_argument("--step-factor", type=float, default=1.25)
    fm.add_argument("--step-duration", type=float, default=10)
    fm.add_argument("--max-rate", type=int, default=100_000)
    fm.add_argument("--p99-limit-ms", type=float, default=50)
    fm.add_argument("--max-failed", type=float, default=0.01, help="share of non-200 answers (default 0.01)")
    fm.add_argument(
        "--no-retry", action="store_true", help="stop at the first failed step (default: retry it once)"
    )
    ap.add_argument(
        "--pipelines",
        default="now,sync,raw",
        help="run these, interleaved: now (this checkout), sync (the same on a nats-server that "
        "fsyncs before every PubAck, sync_interval: always), raw (bare endpoint + raw consumers); "
        "--baseline-tree and --tree add theirs. Default now,sync,raw",
    )
    ap.add_argument(
        "--sync-interval",
        default="always",
        help="the sync pipeline's nats-server sync_interval: always (an fsync before every PubAck; "
        "the default) or an interval such as 1s",
    )
    add_tree_args(ap, "ingest and workers")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT", help="save every figure as JSON")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the services' logs")
    args = ap.parse_args(argv)
    ours = ("now", "sync", "raw")
    args.trees = {**other_trees(args), **dict.fromkeys(ours, this_tree())}
    chosen = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in ours]
    if unknown:
        ap.error(
            f"--pipelines: unknown {', '.join(unknown)} (now, sync, raw; --baseline-tree/--tree add the others)"
        )
    # the other trees first (baseline, the steps), then now, sync, raw: the A/B's row order
    args.pipeline_list = [k for k in args.trees if k not in ours or k in chosen]
    if args.splits:
        args.split_list = [tuple(int(x) for x in s.split(":")) for s in args.splits.split(",")]
    else:
        args.split_list = [(args.ingest_procs, args.workers)]
    return args


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine() -> dict[str, Any]:
    return {
        "cores": _cores(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            "?",
        ),
        "python": platform.python_version(),
        "nats_server": _version([tool("nats-server"), "--version"]),
        "k6": _version([tool("k6"), "version"]),
        "commit": _version(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "load_avg_start": os.getloadavg(),
    }


def judge(r: LoadResult, args: argparse.Namespace) -> str | None:
    """Why this step does not count as sustained, or None."""
    if r.k6.p99_ms > args.p99_limit_ms:
        return f"p99 {r.k6.p99_ms:.1f} ms > {args.p99_limit_ms:g} ms"
    if r.k6.failed_share > args.max_failed:
        return f"failed {r.k6.failed_share:.2%} > {args.max_failed:.2%}"
    if r.k6.accepted < 0.95 * r.target_rate * r.duration_s:
        return (
            f"accepted {r.k6.accepted / r.duration_s:.0f}/s < 95% of {r.target_rate}/s"
            f" (k6 dropped {r.k6.dropped})"
        )
    return None


def keeps_up(r: LoadResult) -> bool:
    return r.done_per_min >= 0.95 * r.accepted_per_min


def step_line(r: LoadResult, verdict: str | None) -> str:
    c = r.cpu_load_s
    return (
        f"  {r.label} {r.target_rate:>6}/s: accepted {r.accepted_per_min / 60:6.0f}/s"
        f" done {r.done_per_min / 60:6.0f}/s backlog {r.backlog_end:6d}"
        f" p50 {r.k6.p50_ms:6.2f} p99 {r.k6.p99_ms:7.1f} ms failed {r.k6.failed_share:.2%}"
        f" lost {r.lost} | cores nats {c['nats'] / r.duration_s:.2f} ingest {c['ingest'] / r.duration_s:.2f}"
        f" workers {c['workers'] / r.duration_s:.2f} k6 {c['k6'] / r.duration_s:.2f}"
        f" | load {r.load_avg[1]:.1f} -> {verdict or 'ok'}"
    )


def find_max(
    stack: Stack,
    pipeline: str,
    split: str,
    args: argparse.Namespace,
    workdir: Path,
    progress: Progress,
    tag: str,
) -> tuple[list[LoadResult], dict[str, Any]]:
    steps: list[LoadResult] = []
    rate, best, best_keepup, reason = args.start_rate, 0, 0, "max rate reached"
    best_step: LoadResult | None = None
    while rate <= args.max_rate:
        attempts = 1 if args.no_retry else 2
        for attempt in range(attempts):
            r = run_load(
                stack,
                pipeline,
                split,
                rate,
                args.step_duration,
                args.drain_timeout,
                workdir,
                f"{tag}-{rate}-{attempt}",
                progress,
            )
            verdict = judge(r, args)
            steps.append(r)
            print(
                step_line(
                    r, verdict if verdict is None or attempt == attempts - 1 else verdict + " (retrying)"
                ),
                flush=True,
            )
            if verdict is None:
                break
        if verdict is not None:
            reason = verdict
            break
        best, best_step = rate, r
        if keeps_up(r):
            best_keepup = rate
        rate = math.ceil(rate * args.step_factor)
    return steps, {
        "pipeline": pipeline,
        "split": split,
        "max_sustained_rate": best,
        "max_rate_workers_kept_up": best_keepup,
        "stopped_because": reason,
        "best_step": [best_step] if best_step else [],
    }


def run_stack(
    cfg: StackConfig,
    split: str,
    args: argparse.Namespace,
    workdir: Path,
    progress: Progress,
    tag: str,
    rnd: int,
) -> tuple[list[LoadResult], dict[str, Any] | None]:
    """One fresh stack of one pipeline: start, warm up, measure (one load or find-max), stop."""
    stack = Stack(cfg)
    failed = True
    try:
        stack.start()
        deadline = time.monotonic() + 30
        while not probe.all_ready(stack.ingest_port, stack.ingest_pids):
            if time.monotonic() > deadline:
                raise SystemExit("bench: the ingest processes did not all become ready")
            time.sleep(0.2)
        if args.warmup > 0:
            run_load(
                stack,
                cfg.pipeline,
                split,
                min(args.start_rate if args.find_max else args.rate, 1000),
                args.warmup,
                args.drain_timeout,
                workdir,
                f"warm-{tag}",
                Progress(quiet=True),
            )
        if args.find_max:
            steps, best = find_max(stack, cfg.pipeline, split, args, workdir, progress, tag)
            best["round"] = rnd + 1
            print(
                f"  -> {cfg.pipeline}: highest sustained: {best['max_sustained_rate']}/s "
                f"({best['max_sustained_rate'] * 60 / 1000:.0f}k/min), workers kept up to "
                f"{best['max_rate_workers_kept_up']}/s; stopped: {best['stopped_because']}",
                flush=True,
            )
            failed = False
            return steps, best
        r = run_load(
            stack, cfg.pipeline, split, args.rate, args.duration, args.drain_timeout, workdir, tag, progress
        )
        print(step_line(r, None), flush=True)
        failed = False
        return [r], None
    finally:
        stack.stop(keep_logs=args.keep_logs or failed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    trees: dict[str, Tree] = args.trees
    info["trees"] = {k: {"tree": str(t.root), "commit": t.commit} for k, t in trees.items()}
    if "baseline" in trees:
        info["baseline"] = info["trees"]["baseline"]
    print(
        f"bench/e2e on {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB;"
        f" {info['nats_server']}, "
        f"{info['k6']}; commit {info['commit']}"
        + "".join(f"; {k} {t.commit} ({t.root})" for k, t in trees.items() if k not in ("now", "raw"))
        + f"; pipelines {','.join(args.pipeline_list)}"
        f"; load average {' '.join(f'{x:.2f}' for x in info['load_avg_start'])}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-e2e-k6-"))
    progress = Progress()
    results: list[LoadResult] = []
    maxima: list[dict[str, Any]] = []
    try:
        for rnd in range(args.rounds):
            for p, w in args.split_list:
                split = f"P{p} W{w} c{args.concurrency} {args.job}"
                for pipeline in args.pipeline_list:
                    cfg = StackConfig(
                        p, w, args.concurrency, args.job, pipeline, trees[pipeline], args.sync_interval
                    )
                    print(
                        f"round {rnd + 1}/{args.rounds}, {pipeline} {split}: starting NATS, {p} ingest "
                        f"process(es), {w} {'raw consumer' if pipeline == 'raw' else 'worker'}(s) ...",
                        flush=True,
                    )
                    steps, best = run_stack(
                        cfg, split, args, workdir, progress, f"{rnd}-{p}-{w}-{pipeline}", rnd
                    )
                    results += steps
                    if best is not None:
                        maxima.append(best)
    except KeyboardInterrupt:
        print("\nbench: interrupted; figures so far:", file=sys.stderr)
    finally:
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    if not results:
        return 1
    print()
    print(report.load_table(results, "every measured load:"))
    print()
    print(report.checks_table(results))
    if len(args.split_list) > 1 or args.rounds > 1:
        print()
        print(report.split_summary([r for r in results if not args.find_max or judge(r, args) is None]))
    if maxima:
        print()
        print(
            "find-max (highest rate with p99 <= "
            f"{args.p99_limit_ms:g} ms, failed <= {args.max_failed:.0%}, accepted >= 95% of target):"
        )
        for m in maxima:
            print(
                f"  round {m['round']} {m['pipeline'] + ' ' + m['split']:<30} {m['max_sustained_rate']:>6}/s = "
                f"{m['max_sustained_rate'] * 60 / 1000:5.0f}k/min;"
                f" workers kept up to {m['max_rate_workers_kept_up']}/s;"
                f" stopped: {m['stopped_because']}"
            )
    if maxima:  # per split and round, the step at its highest sustained rate (fixed costs weigh least)
        ok_runs = [r for m in maxima for r in m.pop("best_step", [])] or results
    else:
        ok_runs = results
    for pipeline in args.pipeline_list:
        runs = [r for r in ok_runs if r.pipeline == pipeline]
        if not runs:
            continue
        print()
        print(
            f"{pipeline}: CPU per order (median over "
            + ("the highest sustained step of each split" if maxima else "these loads")
            + ") and the cores one million orders a minute would need:"
        )
        print(report.cost_table(runs))
    print()
    if maxima:
        print("(find-max: the A/B compares each pipeline's highest sustained step; their rates differ)")
    print(report.ab_table(ok_runs))
    sync_cost = report.sync_cost(ok_runs, args.sync_interval)
    if sync_cost:
        print()
        print(sync_cost)
    lost = sum(r.lost for r in results)
    undrained = [r for r in results if not r.drained]
    print()
    print(
        f"lost (accepted - done after drain), all runs: {lost}"
        + (f"; {len(undrained)} run(s) did not drain within {args.drain_timeout:g}s" if undrained else "")
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {info['cores']} cores")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": {k: v for k, v in vars(args).items() if k not in ("json", "trees")},
                    "runs": [r.to_json() for r in results],
                    "find_max": maxima,
                    "ab": report.ab_summary(ok_runs),
                },
                indent=2,
                default=str,
            )
        )
        print(f"saved {args.json}")
    return 1 if lost or undrained else 0


if __name__ == "__main__":
    sys.exit(main())
